//! The WebSocket frames: parsing what clients send, shaping what they receive.
//!
//! Two protocols share one socket, told apart per frame:
//!
//! - this one: `{"action": NAME, "params": {...}, "id": N}`, answered by
//!   `{"id": N, "response": ...}` or `{"id": N, "error": {"code", "message", "field"?}}`;
//! - the original framework's: `{"event": "action" | "roomAdd" | "roomJoin" | "roomLeave" | "say" |
//!   "roomView" | "detailsView" | "quit" | "exit", ..., "messageId": M}`, answered with
//!   `context: "response"` and `messageId` echoed (or the server's count of frames, taken when
//!   the frame arrived, also sent as `messageCount`).

use serde_json::{Map, Value, json};

use crate::ActionError;

/// One request frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame {
    /// This protocol's action call.
    Call {
        id: Value,
        action: String,
        params: Value,
    },
    /// An original-protocol frame and the `messageId` it carried.
    Legacy {
        message_id: Option<Value>,
        event: Event,
    },
}

/// The verbs of the original protocol.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Action { action: String, params: Value },
    RoomJoin { room: String },
    RoomLeave { room: String },
    Say { room: String, message: Value },
    RoomView { room: String },
    DetailsView,
    Quit,
    Unknown { event: String },
}

/// Why a frame is no request; the id to answer with, when the frame had one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FrameError {
    pub(crate) error: ActionError,
    pub(crate) id: Option<Value>,
    pub(crate) legacy: bool,
}

/// Parses one text frame. Never panics, whatever `text` is.
pub(crate) fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|err| FrameError {
        error: ActionError::MalformedJson {
            message: err.to_string(),
        },
        id: None,
        legacy: false,
    })?;
    let Value::Object(mut object) = value else {
        return Err(bad_frame("a frame is a JSON object", None, false));
    };
    match object.remove("event") {
        Some(event) => parse_legacy(event, object),
        None => parse_call(object),
    }
}

/// Parses this protocol's `{"action", "params", "id"}` frame.
fn parse_call(mut object: Map<String, Value>) -> Result<Frame, FrameError> {
    let id = object.remove("id").unwrap_or(Value::Null);
    let action = match object.remove("action") {
        Some(Value::String(action)) => action,
        Some(_) => {
            return Err(FrameError {
                error: ActionError::invalid("action", "an action name is a string"),
                id: Some(id),
                legacy: false,
            });
        }
        None => {
            return Err(bad_frame(
                "a frame has an \"action\" (or an original \"event\")",
                Some(id),
                false,
            ));
        }
    };
    let params = object
        .remove("params")
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(Frame::Call { id, action, params })
}

/// Parses an original-protocol frame whose `"event"` field was `event`; errors carry its
/// `messageId`.
fn parse_legacy(event: Value, mut object: Map<String, Value>) -> Result<Frame, FrameError> {
    let message_id = object.remove("messageId");
    let Value::String(event) = event else {
        return Err(bad_frame("\"event\" is a string", message_id, true));
    };
    match legacy_event(event, &mut object) {
        Ok(event) => Ok(Frame::Legacy { message_id, event }),
        Err(error) => Err(FrameError {
            error,
            id: message_id,
            legacy: true,
        }),
    }
}

/// The verb named `event`, with the fields it needs taken from the rest of the frame.
fn legacy_event(event: String, object: &mut Map<String, Value>) -> Result<Event, ActionError> {
    Ok(match event.as_str() {
        "action" => legacy_action(object)?,
        "roomAdd" | "roomJoin" => Event::RoomJoin {
            room: room_field(object)?,
        },
        "roomLeave" => Event::RoomLeave {
            room: room_field(object)?,
        },
        "roomView" => Event::RoomView {
            room: room_field(object)?,
        },
        "say" => {
            let room = room_field(object)?;
            let message = object.remove("message").unwrap_or(Value::Null);
            Event::Say { room, message }
        }
        "detailsView" => Event::DetailsView,
        "quit" | "exit" => Event::Quit,
        _ => Event::Unknown { event },
    })
}

/// An original `action` frame: the action's name (and its `apiVersion`) travel inside `params`.
fn legacy_action(object: &mut Map<String, Value>) -> Result<Event, ActionError> {
    let mut params = match object.remove("params") {
        Some(Value::Object(params)) => params,
        None => Map::new(),
        Some(_) => return Err(ActionError::invalid("params", "params is an object")),
    };
    let Some(Value::String(action)) = params.remove("action") else {
        return Err(ActionError::invalid(
            "params.action",
            "an action name is a string",
        ));
    };
    // Versions are not implemented: every action has one.
    params.remove("apiVersion");
    Ok(Event::Action {
        action,
        params: Value::Object(params),
    })
}

/// The `room` field of an original verb.
fn room_field(object: &mut Map<String, Value>) -> Result<String, ActionError> {
    match object.remove("room") {
        Some(Value::String(room)) => Ok(room),
        _ => Err(ActionError::invalid("room", "a room name is a string")),
    }
}

/// A frame that is no request at all (not an object, no action, `event` not a string).
fn bad_frame(message: &str, id: Option<Value>, legacy: bool) -> FrameError {
    FrameError {
        error: ActionError::BadRequest {
            message: message.to_owned(),
        },
        id,
        legacy,
    }
}

/// The first frame a client gets.
pub(crate) fn welcome(connection_id: &str, node_id: &str) -> Value {
    json!({
        "context": "api",
        "welcome": "Hello human! Welcome to Stellar",
        "connection_id": connection_id,
        "node_id": node_id,
    })
}

/// The answer to this protocol's call.
pub(crate) fn call_reply(id: Value, result: Result<Value, ActionError>) -> Value {
    match result {
        Ok(response) => json!({ "id": id, "response": response }),
        Err(err) => json!({ "id": id, "error": err.to_json() }),
    }
}

/// The answer to an original `action` frame: the action's object fields at the top level (any
/// other value under `data`), `error` on failure, always `context` and `messageId`.
pub(crate) fn legacy_action_reply(
    message_id: Value,
    count: u64,
    result: Result<Value, ActionError>,
) -> Value {
    let mut reply = match result {
        Ok(Value::Object(fields)) => fields,
        Ok(other) => Map::from_iter([("data".to_owned(), other)]),
        Err(err) => Map::from_iter([("error".to_owned(), err.to_json())]),
    };
    stamp(&mut reply, message_id, count);
    Value::Object(reply)
}

/// The answer to an original verb: `status` "OK" with `data`, or the error's message as
/// `status` and the error itself as `error`.
pub(crate) fn legacy_verb_reply(
    message_id: Value,
    count: u64,
    result: Result<Value, ActionError>,
) -> Value {
    let mut reply = Map::new();
    match result {
        Ok(data) => {
            reply.insert("status".into(), "OK".into());
            reply.insert("data".into(), data);
        }
        Err(err) => {
            reply.insert("status".into(), err.to_string().into());
            reply.insert("error".into(), err.to_json());
        }
    }
    stamp(&mut reply, message_id, count);
    Value::Object(reply)
}

/// Adds the fields every original-protocol reply carries.
fn stamp(reply: &mut Map<String, Value>, message_id: Value, count: u64) {
    reply.insert("context".into(), "response".into());
    reply.insert("messageId".into(), message_id);
    reply.insert("messageCount".into(), count.into());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_call_frame_parses() {
        let frame = parse_frame(r#"{"action":"status","params":{"a":1},"id":7}"#).expect("frame");
        assert_eq!(
            frame,
            Frame::Call {
                id: json!(7),
                action: "status".into(),
                params: json!({"a": 1})
            }
        );
    }

    #[test]
    fn original_frames_parse() {
        let frame = parse_frame(
            r#"{"event":"action","params":{"action":"status","apiVersion":1,"x":2},"messageId":"m1"}"#,
        )
        .expect("frame");
        assert_eq!(
            frame,
            Frame::Legacy {
                message_id: Some(json!("m1")),
                event: Event::Action {
                    action: "status".into(),
                    params: json!({"x": 2})
                }
            }
        );
        for verb in ["roomAdd", "roomJoin"] {
            let frame =
                parse_frame(&format!(r#"{{"event":"{verb}","room":"lobby"}}"#)).expect("frame");
            assert_eq!(
                frame,
                Frame::Legacy {
                    message_id: None,
                    event: Event::RoomJoin {
                        room: "lobby".into()
                    }
                }
            );
        }
    }

    #[test]
    fn bad_frames_keep_their_id() {
        let err = parse_frame(r#"{"id":3}"#).expect_err("no action");
        assert_eq!(err.id, Some(json!(3)));
        let err = parse_frame(r#"{"event":"say","messageId":9}"#).expect_err("no room");
        assert_eq!(err.id, Some(json!(9)));
        assert_eq!(err.error.code(), "invalid_input");
        let err = parse_frame("{").expect_err("not json");
        assert_eq!(err.error.code(), "malformed_json");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_the_parser(text in ".{0,200}") {
            let _ = parse_frame(&text);
        }

        #[test]
        fn arbitrary_frames_never_panic_the_parser(
            event in prop::option::of(prop_oneof![
                Just("action".to_owned()), Just("say".to_owned()), Just("roomAdd".to_owned()),
                Just("roomView".to_owned()), ".{0,8}".prop_map(|s| s)
            ]),
            room in prop::option::of(".{0,8}"),
            action in prop::option::of(".{0,8}"),
            numeric in any::<bool>(),
        ) {
            let mut object = Map::new();
            if let Some(event) = event { object.insert("event".into(), event.into()); }
            if let Some(room) = room {
                object.insert("room".into(), if numeric { json!(1) } else { room.into() });
            }
            if let Some(action) = action {
                object.insert("action".into(), action.clone().into());
                object.insert("params".into(), if numeric { json!([1]) } else { json!({"action": action}) });
            }
            let _ = parse_frame(&Value::Object(object).to_string());
        }
    }
}
