//! The one error type of the web layer, and the one place that picks an HTTP status.

use std::time::Duration;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tracing::error;

/// Why a request or an action call failed. Its [`IntoResponse`] impl is the only place where the
/// web layer chooses a status code; WebSocket replies carry the same `code`, `message` and `field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The body is not JSON (400).
    #[error("malformed JSON: {message}")]
    MalformedJson {
        /// What the parser said.
        message: String,
    },
    /// The request is not one this endpoint serves (400), such as a plain GET on `/ws`.
    #[error("bad request: {message}")]
    BadRequest {
        /// What is wrong with it.
        message: String,
    },
    /// The action caller may not do this (403), such as saying in a room it did not join.
    #[error("{message}")]
    Forbidden {
        /// Why not.
        message: String,
    },
    /// The target is no longer in the state the request expects (409), such as deleting a
    /// delayed task that was promoted meanwhile.
    #[error("{message}")]
    Conflict {
        /// What changed.
        message: String,
    },
    /// No action of that name is registered (404).
    #[error("unknown action {name}")]
    UnknownAction {
        /// The name asked for.
        name: String,
    },
    /// Nothing is served at that path (404).
    #[error("nothing at {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The path does not accept that method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than the limit (413).
    #[error("request body over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The input does not fit the action (422).
    #[error("invalid input{}: {message}", field.as_ref().map(|f| format!(" {f}")).unwrap_or_default())]
    InvalidInput {
        /// The field at fault, as a path (`user.name`, `items[2]`), when known.
        field: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// The connection has too many calls in flight (429).
    #[error("too many calls in flight (max {max})")]
    TooManyPending {
        /// The limit.
        max: usize,
    },
    /// The handler failed (500). The message is the handler's own, meant for the client: use
    /// [`ActionError::internal`] for failures whose details must stay in the logs.
    #[error("{message}")]
    Failed {
        /// What the client is told.
        message: String,
    },
    /// The node is draining and takes no new work of this kind (503).
    #[error("the node is shutting down")]
    Draining,
    /// The node is not ready to serve (503).
    #[error("not ready: {reason}")]
    NotReady {
        /// Why, without internals.
        reason: String,
    },
    /// This node serves as many WebSockets (or dashboard event streams) as it may (503).
    #[error("too many open connections of this kind on this node (max {max})")]
    TooManyConnections {
        /// The limit.
        max: usize,
    },
    /// The request took longer than the request timeout (504).
    #[error("request timed out after {} ms", after.as_millis())]
    Timeout {
        /// The timeout.
        after: Duration,
    },
}

/// The error code of a response, kept in its extensions so the counting layer can see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

impl ActionError {
    /// Invalid input in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A handler failure whose `message` the client may read.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
        }
    }

    /// A handler failure whose details stay in the logs: the client reads "internal error".
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        error!(cause = %cause, "action failed");
        Self::failed("internal error")
    }

    /// The stable, machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson { .. } => "malformed_json",
            Self::BadRequest { .. } => "bad_request",
            Self::Forbidden { .. } => "forbidden",
            Self::Conflict { .. } => "conflict",
            Self::UnknownAction { .. } => "unknown_action",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidInput { .. } => "invalid_input",
            Self::TooManyPending { .. } => "too_many_pending",
            Self::Failed { .. } => "server_error",
            Self::Draining => "shutting_down",
            Self::NotReady { .. } => "not_ready",
            Self::TooManyConnections { .. } => "too_many_connections",
            Self::Timeout { .. } => "timeout",
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson { .. } | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::UnknownAction { .. } | Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidInput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Draining | Self::NotReady { .. } | Self::TooManyConnections { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// `{"code", "message", "field"?}`: the error as HTTP bodies and WebSocket replies carry it.
    pub fn to_json(&self) -> Value {
        let message = match self {
            Self::InvalidInput { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut body = json!({ "code": self.code(), "message": message });
        if let Self::InvalidInput {
            field: Some(field), ..
        } = self
        {
            body["field"] = Value::String(field.clone());
        }
        body
    }
}

impl IntoResponse for ActionError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), Json(json!({ "error": self.to_json() }))).into_response();
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_names_its_field() {
        let err = ActionError::invalid("user.name", "missing");
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.to_json(),
            json!({"code": "invalid_input", "message": "missing", "field": "user.name"})
        );
    }

    #[test]
    fn internal_failures_hide_their_cause() {
        let err = ActionError::internal("redis://:hunter2@db failed");
        assert_eq!(err.to_json()["message"], "internal error");
    }
}
