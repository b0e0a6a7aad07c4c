//! Actions: a name, a typed input, an async handler; and the registry that holds them.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, RwLock},
};

use futures_util::FutureExt;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::Value;
use tracing::error;

use crate::{ActionContext, ActionError};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler =
    Arc<dyn Fn(ActionContext, Params) -> BoxFuture<Result<Value, ActionError>> + Send + Sync>;

/// An action's input as it arrived.
#[derive(Debug, Clone)]
pub(crate) enum Params {
    /// A JSON body or the `params` of a WebSocket frame.
    Json(Value),
    /// A query string (without `?`); values are text, decoded into the input's field types.
    Query(String),
}

/// An input for actions that take none: accepts and ignores anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoInput;

impl<'de> Deserialize<'de> for NoInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Self)
    }
}

/// One input of an action, as `documentation` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDoc {
    /// The field name.
    pub name: String,
    /// Whether the action fails without it.
    pub required: bool,
    /// What it is for.
    pub description: String,
}

/// A named operation clients call over HTTP (`/api/{name}`) or WebSocket.
///
/// ```
/// use serde::Deserialize;
/// use stellar_web::{Action, ActionError};
///
/// #[derive(Deserialize)]
/// struct Greet { name: String }
///
/// let action = Action::new("greet", |_ctx, input: Greet| async move {
///     if input.name.is_empty() {
///         return Err(ActionError::invalid("name", "must not be empty"));
///     }
///     Ok(format!("hello, {}", input.name))
/// })
/// .description("Greets someone")
/// .input("name", "who to greet");
/// assert_eq!(action.name(), "greet");
/// ```
#[derive(Clone)]
pub struct Action {
    name: String,
    description: String,
    inputs: Vec<InputDoc>,
    ordered: bool,
    handler: Handler,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Action")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl Action {
    /// An action named `name` whose input decodes into `I` and whose output encodes from `O`.
    /// Input that does not decode fails with [`ActionError::InvalidInput`] naming the field.
    pub fn new<I, O, F, Fut>(name: impl Into<String>, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(ActionContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActionError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, params| {
            let handler = handler.clone();
            Box::pin(async move {
                let input: I = decode(params)?;
                let output = handler(ctx, input).await?;
                serde_json::to_value(output).map_err(ActionError::internal)
            })
        });
        Self {
            name: name.into(),
            description: String::new(),
            inputs: Vec::new(),
            ordered: false,
            handler: erased,
        }
    }

    /// Sets the description `documentation` shows.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Documents a required input.
    pub fn input(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.inputs.push(InputDoc {
            name: name.into(),
            required: true,
            description: description.into(),
        });
        self
    }

    /// Documents an optional input.
    pub fn optional_input(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.inputs.push(InputDoc {
            name: name.into(),
            required: false,
            description: description.into(),
        });
        self
    }

    /// Runs this action's WebSocket calls in frame order, holding up the connection's later
    /// frames, instead of concurrently. For short actions whose order matters (`room.say`).
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// The action's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its description.
    pub fn about(&self) -> &str {
        &self.description
    }

    /// Its documented inputs.
    pub fn inputs(&self) -> &[InputDoc] {
        &self.inputs
    }

    /// Whether its WebSocket calls run in frame order (see [`Action::ordered`]).
    pub(crate) fn is_ordered(&self) -> bool {
        self.ordered
    }

    /// Runs the handler; a panic becomes a 500 whose details stay in the logs.
    pub(crate) async fn run(
        &self,
        ctx: ActionContext,
        params: Params,
    ) -> Result<Value, ActionError> {
        match AssertUnwindSafe((self.handler)(ctx, params))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(_) => {
                error!(action = %self.name, "action panicked");
                Err(ActionError::failed("internal error"))
            }
        }
    }
}

/// Decodes an action's input, naming the field at fault.
pub(crate) fn decode<I: DeserializeOwned>(params: Params) -> Result<I, ActionError> {
    let result = match params {
        Params::Json(value) => serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            (path, err.into_inner().to_string())
        }),
        Params::Query(query) => {
            let deserializer =
                serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
            serde_path_to_error::deserialize(deserializer).map_err(|err| {
                let path = err.path().to_string();
                (path, err.into_inner().to_string())
            })
        }
    };
    result.map_err(|(path, message)| {
        let field = (path != ".")
            .then_some(path)
            .or_else(|| quoted_field(&message));
        ActionError::InvalidInput { field, message }
    })
}

/// The field serde names in "missing field `x`" or "unknown field `x`".
fn quoted_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next().map(str::to_owned)
}

/// The registered actions, by name. Cloning it is cheap; clones share the registry.
#[derive(Clone, Default)]
pub struct Actions {
    inner: Arc<RwLock<BTreeMap<String, Arc<Action>>>>,
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl Actions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `action`, replacing any earlier one of that name.
    pub fn register(&self, action: Action) -> &Self {
        self.write().insert(action.name.clone(), Arc::new(action));
        self
    }

    /// The names of every registered action, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The action named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Action>> {
        self.read().get(name).cloned()
    }

    /// Every registered action, sorted by name.
    pub fn all(&self) -> Vec<Arc<Action>> {
        self.read().values().cloned().collect()
    }

    /// Calls the action `name` with JSON `params`, as a WebSocket frame would.
    ///
    /// # Errors
    ///
    /// [`ActionError::UnknownAction`], [`ActionError::InvalidInput`], or the handler's error.
    pub async fn call(
        &self,
        ctx: ActionContext,
        name: &str,
        params: Value,
    ) -> Result<Value, ActionError> {
        self.call_with(ctx, name, Params::Json(params)).await
    }

    /// As [`Actions::call`], with the input as it arrived (JSON or a query string).
    pub(crate) async fn call_with(
        &self,
        ctx: ActionContext,
        name: &str,
        params: Params,
    ) -> Result<Value, ActionError> {
        let action = self.get(name).ok_or_else(|| ActionError::UnknownAction {
            name: name.to_owned(),
        })?;
        action.run(ctx, params).await
    }

    /// The registry for reading, even after a panic elsewhere poisoned the lock.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Action>>> {
        // Each critical section is one map operation: a poisoned lock is still consistent.
        stellar_core::sync::read(&self.inner)
    }

    /// The registry for writing, even after a panic elsewhere poisoned the lock.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Action>>> {
        stellar_core::sync::write(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Input {
        name: String,
        count: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn a_missing_field_is_named() {
        let err = decode::<Input>(Params::Json(json!({"count": 2}))).expect_err("no name");
        assert_eq!(
            err,
            ActionError::InvalidInput {
                field: Some("name".into()),
                message: "missing field `name`".into()
            }
        );
    }

    #[test]
    fn a_wrong_type_is_named_by_its_path() {
        let err = decode::<Input>(Params::Json(json!({"name": "a", "tags": ["x", 3]})))
            .expect_err("bad tag");
        let ActionError::InvalidInput { field, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(field.as_deref(), Some("tags[1]"));
    }

    #[test]
    fn query_strings_decode_into_typed_fields() {
        let input: Input = decode(Params::Query("name=ann&count=3".into())).expect("decodes");
        assert_eq!(input.count, Some(3));
        let err = decode::<Input>(Params::Query("name=ann&count=x".into())).expect_err("x");
        let ActionError::InvalidInput { field, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(field.as_deref(), Some("count"));
    }

    #[test]
    fn no_input_accepts_anything() {
        decode::<NoInput>(Params::Json(json!([1, {"a": null}]))).expect("anything");
        decode::<NoInput>(Params::Query("a=1".into())).expect("anything");
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_json_never_panics(value in arbitrary_json()) {
            let _ = decode::<Input>(Params::Json(value.clone()));
            let _ = decode::<NoInput>(Params::Json(value.clone()));
            let _ = decode::<Value>(Params::Json(value));
        }

        #[test]
        fn decoding_arbitrary_query_strings_never_panics(query in ".{0,64}") {
            let _ = decode::<Input>(Params::Query(query.clone()));
            let _ = decode::<Value>(Params::Query(query));
        }
    }
}
