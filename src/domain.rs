//! The gateway's core vocabulary: event ids, partitions, the Notify payload and its exact
//! upstream size, and the validated form of an ingress request.
//!
//! The 1,048,576-byte cap of Zendesk's Notify API is checked on the very bytes that
//! delivery sends: [`NotifyPayload::upstream_bytes`] is used by both ingress (for the size)
//! and delivery (for the request body).

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Zendesk's largest Notify request body, in bytes.
pub const NOTIFY_MAX_BYTES: usize = 1_048_576;

/// Delivery priority of an event; `High` events of an account go before `Normal` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Delivered before any normal event of the same account.
    High,
    /// The default.
    #[default]
    Normal,
}

impl Priority {
    /// One-letter tag used in storage keys.
    pub fn tag(self) -> &'static str {
        match self {
            Priority::High => "h",
            Priority::Normal => "n",
        }
    }
}

/// An event id: a UUIDv7 (time-ordered) followed by the event's partition, 36 hex digits.
/// The partition is part of the id so that a lookup by id finds its storage slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// A new id for an event stored in `partition`.
    pub fn new(partition: u16) -> Self {
        // (written in place: through `format!` this cost each stored event more than the
        // UUID itself)
        const HEX: &[u8; 16] = b"0123456789abcdef";
        const UUID: usize = uuid::fmt::Simple::LENGTH;
        let mut buf = [0u8; UUID + 4];
        uuid::Uuid::now_v7().simple().encode_lower(&mut buf[..UUID]);
        for (i, shift) in [12u16, 8, 4, 0].into_iter().enumerate() {
            buf[UUID + i] = HEX[usize::from((partition >> shift) & 0xf)];
        }
        // (hex digits only: always valid UTF-8)
        EventId(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Parses an id received from a caller; `None` unless it is well formed.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 36
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| EventId(raw.to_string()))
    }

    /// The id of the event a delivery id (`<event id>:<index>`) names; `None` unless it
    /// names a well-formed one.
    pub fn of_delivery(delivery_id: &str) -> Option<Self> {
        delivery_id.split(':').next().and_then(Self::parse)
    }

    /// When the event was created, in Unix ms: a UUIDv7 begins with the time it was made,
    /// in 12 hex digits.
    pub fn created_ms(&self) -> u64 {
        u64::from_str_radix(&self.0[..12], 16).unwrap_or(0)
    }

    /// The partition encoded in the id.
    pub fn partition(&self) -> u16 {
        u16::from_str_radix(&self.0[32..], 16).unwrap_or(0)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The partition an account's keys live in: FNV-1a of the id, stable across processes
/// and versions (it must never change while data exists).
pub fn partition_of(account: &str, partitions: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in account.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

/// The JSON body of one upstream Notify call, minus `agent_id`, serialised compactly.
///
/// Field order is Zendesk's documented one: `app_id`, `event`, `body`, `agent_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPayload {
    base: String,
}

#[derive(Serialize)]
struct WirePayload<'a> {
    app_id: u64,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

impl NotifyPayload {
    /// Builds the payload of an event.
    pub fn new(app_id: u64, event: &str, body: Option<&str>) -> Self {
        let wire = WirePayload {
            app_id,
            event,
            body,
        };
        // Serialising a struct of integers and strings cannot fail.
        let base = serde_json::to_string(&wire).unwrap_or_default();
        NotifyPayload { base }
    }

    /// Restores a payload from its stored form (the compact JSON without `agent_id`).
    pub fn from_stored(base: String) -> Self {
        NotifyPayload { base }
    }

    /// The stored form.
    pub fn stored(&self) -> &str {
        &self.base
    }

    /// The exact bytes sent upstream for the given agent.
    pub fn upstream_bytes(&self, agent_id: Option<u64>) -> Vec<u8> {
        match agent_id {
            None => self.base.as_bytes().to_vec(),
            Some(agent) => {
                let head = self.base.strip_suffix('}').unwrap_or(&self.base);
                let mut out = Vec::with_capacity(self.base.len() + 32);
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(b",\"agent_id\":");
                out.extend_from_slice(agent.to_string().as_bytes());
                out.push(b'}');
                out
            }
        }
    }

    /// The length of [`Self::upstream_bytes`] without building it.
    pub fn upstream_len(&self, agent_id: Option<u64>) -> usize {
        match agent_id {
            None => self.base.len(),
            Some(agent) => self.base.len() + ",\"agent_id\":".len() + decimal_len(agent),
        }
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// One problem with a request field, reported in an error's `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer of the offending field (`""` for the whole document).
    pub pointer: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// A validated Notify request, ready to be stored.
#[derive(Debug, Clone)]
pub struct NotifyEvent {
    /// What goes upstream (without `agent_id`).
    pub payload: NotifyPayload,
    /// One entry per Notify call: `None` notifies every agent.
    pub agents: Vec<Option<u64>>,
    /// Time to live in seconds, if the caller set one.
    pub ttl_seconds: Option<u64>,
    /// Delivery priority.
    pub priority: Priority,
}

/// Why a Notify request cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// Schema violations, each naming its field.
    Invalid(Vec<FieldError>),
    /// The upstream request body would exceed [`NOTIFY_MAX_BYTES`].
    TooLarge {
        /// Size of the largest upstream body the event would produce.
        size: usize,
    },
}

impl NotifyEvent {
    /// Builds an event from a JSON document that passed the schema; re-checks every
    /// field so that it never trusts the schema alone.
    pub fn from_json(value: &Value) -> Result<Self, EventError> {
        let Some(obj) = value.as_object() else {
            return Err(EventError::Invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        };
        let mut errors = Vec::new();
        let app_id = uint_field(obj.get("app_id"), "/app_id", true, &mut errors);
        let event = event_field(obj.get("event"), &mut errors);
        let body = match obj.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let agents = agents_field(obj, &mut errors);
        let ttl_seconds = uint_field(obj.get("ttl_seconds"), "/ttl_seconds", false, &mut errors);
        if ttl_seconds == Some(0) {
            errors.push(FieldError::new("/ttl_seconds", "must be at least 1"));
        }
        let priority = priority_field(obj.get("priority"), &mut errors);
        unknown_fields(obj, &mut errors);
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.pointer.cmp(&b.pointer));
            errors.dedup();
            return Err(EventError::Invalid(errors));
        }
        let (Some(app_id), Some(event)) = (app_id, event) else {
            return Err(EventError::Invalid(vec![FieldError::new(
                "",
                "invalid event",
            )]));
        };
        let payload = NotifyPayload::new(app_id, event, body.as_deref());
        let size = agents
            .iter()
            .map(|a| payload.upstream_len(*a))
            .max()
            .unwrap_or(0);
        if size > NOTIFY_MAX_BYTES {
            return Err(EventError::TooLarge { size });
        }
        Ok(NotifyEvent {
            payload,
            agents,
            ttl_seconds,
            priority,
        })
    }
}

/// `event`: a non-empty string.
fn event_field<'a>(value: Option<&'a Value>, errors: &mut Vec<FieldError>) -> Option<&'a str> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(_) => {
            errors.push(FieldError::new("/event", "must be a non-empty string"));
            None
        }
        None => {
            errors.push(FieldError::new("/event", "is required"));
            None
        }
    }
}

/// The agents to notify: `agent_id` (one, or `None` for every agent), or `agent_ids` (a
/// non-empty list, one call each); not both.
fn agents_field(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Vec<Option<u64>> {
    let agent_id = uint_field(obj.get("agent_id"), "/agent_id", false, errors);
    match obj.get("agent_ids") {
        None => vec![agent_id],
        Some(_) if obj.contains_key("agent_id") => {
            errors.push(FieldError::new(
                "/agent_ids",
                "agent_id and agent_ids are mutually exclusive",
            ));
            vec![None]
        }
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| uint_field(Some(item), &format!("/agent_ids/{i}"), true, errors))
            .collect(),
        Some(_) => {
            errors.push(FieldError::new(
                "/agent_ids",
                "must be a non-empty array of agent ids",
            ));
            vec![None]
        }
    }
}

/// `priority`: `"high"` or `"normal"` (the default).
fn priority_field(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Priority {
    match value {
        None => Priority::Normal,
        Some(Value::String(s)) if s == "normal" => Priority::Normal,
        Some(Value::String(s)) if s == "high" => Priority::High,
        Some(_) => {
            errors.push(FieldError::new(
                "/priority",
                "must be \"high\" or \"normal\"",
            ));
            Priority::Normal
        }
    }
}

/// Every field that is not one of [`KNOWN_FIELDS`].
fn unknown_fields(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    for key in obj.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("/{}", escape_pointer(key)),
                "is not a known field",
            ));
        }
    }
}

const KNOWN_FIELDS: &[&str] = &[
    "app_id",
    "event",
    "body",
    "agent_id",
    "agent_ids",
    "ttl_seconds",
    "priority",
];

fn uint_field(
    value: Option<&Value>,
    pointer: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    match value {
        None if required => {
            errors.push(FieldError::new(pointer, "is required"));
            None
        }
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_SAFE_INTEGER => Some(n),
            _ => {
                errors.push(FieldError::new(pointer, "must be a non-negative integer"));
                None
            }
        },
    }
}

/// Largest integer JavaScript clients (and Zendesk) represent exactly.
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON Schema of `POST /v1/accounts/{account}/notify` bodies.
pub fn notify_schema() -> Value {
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Notify event",
        "type": "object",
        "additionalProperties": false,
        "required": ["app_id", "event"],
        "properties": {
            "app_id": {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER},
            "event": {"type": "string", "minLength": 1},
            "body": {},
            "agent_id": {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER},
            "agent_ids": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER}
            },
            "ttl_seconds": {"type": "integer", "minimum": 1},
            "priority": {"enum": ["high", "normal"]}
        }
    })
}

/// A fingerprint of a request body for idempotency: SHA-256 of its canonical JSON (keys
/// sorted, no whitespace), so that a re-sent request matches whatever its formatting.
pub fn fingerprint(value: &Value) -> String {
    // serde_json's map is ordered by key, so `to_string` is canonical.
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_bytes_match_serde_and_length() {
        let payload = NotifyPayload::new(375, "updateUsersPhoneNumber", Some("+61455534512"));
        let bytes = payload.upstream_bytes(Some(534));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"app_id":375,"event":"updateUsersPhoneNumber","body":"+61455534512","agent_id":534}"#
        );
        for agent in [None, Some(0), Some(9), Some(10), Some(u64::MAX)] {
            assert_eq!(
                payload.upstream_len(agent),
                payload.upstream_bytes(agent).len()
            );
        }
        let bare = NotifyPayload::new(0, "e\"\n", None);
        assert_eq!(bare.stored(), r#"{"app_id":0,"event":"e\"\n"}"#);
    }

    #[test]
    fn object_body_becomes_compact_string() {
        let event = NotifyEvent::from_json(&json!({
            "app_id": 1, "event": "e", "body": {"b": [1, 2], "a": "x"}
        }))
        .unwrap();
        let sent: Value = serde_json::from_slice(&event.payload.upstream_bytes(None)).unwrap();
        assert_eq!(sent["body"], json!(r#"{"a":"x","b":[1,2]}"#));
    }

    #[test]
    fn field_errors_name_pointers() {
        let err = NotifyEvent::from_json(&json!({
            "app_id": -1, "event": "", "agent_ids": [1, "x"], "agent_id": 3, "extra": 1
        }))
        .unwrap_err();
        let EventError::Invalid(errors) = err else {
            panic!("expected invalid")
        };
        let pointers: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/agent_ids", "/app_id", "/event", "/extra"]);
    }

    #[test]
    fn size_cap_is_exact() {
        // {"app_id":1,"event":"e","body":"..."} has 34 bytes around the body.
        let overhead = NotifyPayload::new(1, "e", Some("")).stored().len();
        let fits = "x".repeat(NOTIFY_MAX_BYTES - overhead);
        let event =
            NotifyEvent::from_json(&json!({"app_id": 1, "event": "e", "body": fits})).unwrap();
        assert_eq!(event.payload.upstream_len(None), NOTIFY_MAX_BYTES);
        let over = "x".repeat(NOTIFY_MAX_BYTES - overhead + 1);
        assert_eq!(
            NotifyEvent::from_json(&json!({"app_id": 1, "event": "e", "body": over})).unwrap_err(),
            EventError::TooLarge {
                size: NOTIFY_MAX_BYTES + 1
            }
        );
    }

    #[test]
    fn event_ids_carry_their_partition() {
        let id = EventId::new(4095);
        assert_eq!(id.as_str().len(), 36);
        let id_of = EventId::new(0x0a3f);
        assert!(id_of.as_str().ends_with("0a3f"), "{id_of}");
        assert_eq!(EventId::parse(id_of.as_str()), Some(id_of.clone()));
        assert_eq!(id_of.partition(), 0x0a3f);
        assert_eq!(EventId::parse(id.as_str()).unwrap().partition(), 4095);
        assert!(EventId::parse("not-an-id").is_none());
        assert!(EventId::parse(&"G".repeat(36)).is_none());
    }

    #[test]
    fn event_ids_carry_when_they_were_made() {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let before = now();
        let id = EventId::new(7);
        let after = now();
        let made = EventId::of_delivery(&format!("{id}:3"))
            .unwrap()
            .created_ms();
        // (a second either way: the id's clock keeps its ids in order, and may run a
        // little ahead of the wall clock, which may also step)
        assert!(
            (before - 1000..=after + 1000).contains(&made),
            "{made} not within a second of {before}..={after}"
        );
        assert_eq!(EventId::of_delivery(&format!("{id}:3")), Some(id));
        assert_eq!(EventId::of_delivery("e:0"), None);
        assert_eq!(EventId::of_delivery(""), None);
    }

    #[test]
    fn partitions_are_stable() {
        assert_eq!(partition_of("acme", 16), partition_of("acme", 16));
        assert!(partition_of("acme", 16) < 16);
        assert_eq!(partition_of("anything", 1), 0);
    }
}
