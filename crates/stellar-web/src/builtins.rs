//! Built-in actions: `status`, `documentation`, and the room verbs.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Action, ActionContext, ActionError, Actions, InputDoc, NoInput};

/// Registers the built-ins that `actions` does not define itself.
pub(crate) fn register(actions: &Actions) {
    let documentation = {
        let actions = actions.clone();
        Action::new("documentation", move |_ctx, _: NoInput| {
            let actions = actions.clone();
            async move { Ok(documentation(&actions)) }
        })
        .description("Every action this node serves, with its description and inputs")
    };
    for action in [
        status(),
        documentation,
        room_join(),
        room_leave(),
        room_say(),
        room_members(),
    ] {
        if actions.get(action.name()).is_none() {
            actions.register(action);
        }
    }
}

/// `status`: this node and the live nodes of the cluster.
fn status() -> Action {
    Action::new("status", |ctx: ActionContext, _: NoInput| async move {
        let services = ctx.services();
        let api = &services.api;
        let nodes: Vec<String> = services
            .membership
            .nodes()
            .await
            .map_err(ActionError::internal)?
            .into_iter()
            .map(|node| node.id.to_string())
            .collect();
        Ok(json!({
            "node_id": api.node_id(),
            "incarnation": api.incarnation(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_ms": api.uptime().as_millis() as u64,
            "state": format!("{:?}", api.state()).to_lowercase(),
            "tasks_in_flight": services.tasks.running_here(),
            "nodes": nodes,
        }))
    })
    .description("This node (id, uptime, state, tasks in flight) and the live nodes of the cluster")
}

#[derive(Serialize)]
struct ActionDoc<'a> {
    name: &'a str,
    description: &'a str,
    inputs: &'a [InputDoc],
}

/// The `documentation` answer: every registered action with its description and inputs.
fn documentation(actions: &Actions) -> Value {
    let all = actions.all();
    let docs: Vec<ActionDoc<'_>> = all
        .iter()
        .map(|action| ActionDoc {
            name: action.name(),
            description: action.about(),
            inputs: action.inputs(),
        })
        .collect();
    json!({ "actions": docs })
}

#[derive(Deserialize)]
struct RoomInput {
    room: String,
}

#[derive(Deserialize)]
struct SayInput {
    room: String,
    message: Value,
}

/// The calling connection, for the room verbs that need one.
fn caller(ctx: &ActionContext) -> Result<crate::ConnectionId, ActionError> {
    ctx.connection()
        .cloned()
        .ok_or_else(|| ActionError::BadRequest {
            message: "this action needs a WebSocket connection".into(),
        })
}

fn room_join() -> Action {
    Action::new(
        "room.join",
        |ctx: ActionContext, input: RoomInput| async move {
            let id = caller(&ctx)?;
            ctx.rooms().join(&id, &input.room).await
        },
    )
    .description("Joins the calling WebSocket connection to a room; false if it was a member")
    .input("room", "the room name")
    .ordered()
}

fn room_leave() -> Action {
    Action::new(
        "room.leave",
        |ctx: ActionContext, input: RoomInput| async move {
            let id = caller(&ctx)?;
            ctx.rooms().leave(&id, &input.room).await
        },
    )
    .description("Takes the calling WebSocket connection out of a room; false if it was no member")
    .input("room", "the room name")
    .ordered()
}

fn room_say() -> Action {
    Action::new("room.say", |ctx: ActionContext, input: SayInput| async move {
        let id = caller(&ctx)?;
        ctx.rooms().say(&id, &input.room, input.message).await?;
        Ok(true)
    })
    .description("Says a message in a room the calling connection joined; every member on every node receives it")
    .input("room", "the room name")
    .input("message", "any JSON value")
    .ordered()
}

fn room_members() -> Action {
    Action::new(
        "room.members",
        |ctx: ActionContext, input: RoomInput| async move {
            // Only a member sees who else is in a room (as the original's roomView): the list
            // holds connection ids, and every listing asks every node.
            let id = caller(&ctx)?;
            if !ctx.rooms().is_local_member(&id, &input.room) {
                return Err(ActionError::Forbidden {
                    message: format!("only a member of {} sees its members", input.room),
                });
            }
            let members = ctx.rooms().members(&input.room).await?;
            Ok(json!({ "room": input.room, "members": members }))
        },
    )
    .description("The members of a room on every live node (for a member of the room)")
    .input("room", "the room name")
}
