//! The scripts' replies read into the queue's types, and outcomes written as script
//! arguments.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::{CallStatus, ClaimBatch, Claimed, EnqueueOutcome, Outcome, QueueError};
use crate::domain::{EventId, NotifyPayload};

/// A call status as a script stored it.
pub(super) fn call_status(text: &str) -> Result<CallStatus, QueueError> {
    CallStatus::parse(text)
        .ok_or_else(|| QueueError::Protocol(format!("unknown call status {text:?}")))
}

/// The fields of one claimed delivery in a claim's reply.
const CLAIM_FIELDS: usize = 7;

/// The claimed deliveries, and how many dead letters the claim dropped. The reply is flat:
/// the wait, the count and the claim's time (Redis ms), then each delivery's
/// [`CLAIM_FIELDS`] fields in turn. A delivery's lease lasts from the claim's time to its
/// token, and its place in its lease group is its place in the reply's run of its account
/// (an account is claimed once per call, its group together and in order): the reply
/// carries neither, as each value it carries costs Redis and the gateway's parser.
pub(super) fn parse_claim_reply(reply: Value) -> Result<(ClaimBatch, u64), QueueError> {
    let mut reply = array(reply)?.into_iter();
    let next_due = reply
        .next()
        .and_then(|v| int(&v))
        .filter(|ms| *ms >= 0)
        .map(|ms| Duration::from_millis(ms as u64));
    let dropped = reply.next().and_then(|v| int(&v)).unwrap_or(0).max(0) as u64;
    // (without it no lease could be timed: a reply that lacks it is the script's error)
    let claimed_at = reply
        .next()
        .and_then(|v| int(&v))
        .filter(|ms| *ms > 0)
        .ok_or_else(|| QueueError::Protocol("claim answered without its time".into()))?
        as u64;
    let fields: Vec<Value> = reply.collect();
    if fields.len() % CLAIM_FIELDS != 0 {
        return Err(QueueError::Protocol("short claim entry".into()));
    }
    let mut items: Vec<Claimed> = Vec::with_capacity(fields.len() / CLAIM_FIELDS);
    for f in fields.chunks_exact(CLAIM_FIELDS) {
        let agent = text(&f[3]).and_then(|s| s.parse::<u64>().ok());
        let stored = String::from_utf8_lossy(stored_body(&bytes(&f[2]))).into_owned();
        let delivery_id = text(&f[0]).unwrap_or_default();
        let account = text(&f[1]).unwrap_or_default();
        let lease_token = int(&f[5]).unwrap_or(0).max(0) as u64;
        let group_index = match items.last() {
            Some(previous) if previous.account == account => previous.group_index + 1,
            _ => 0,
        };
        items.push(Claimed {
            // the time the id carries (the gateway's clock when it accepted the event,
            // which is the event's time of creation everywhere)
            created_ms: EventId::of_delivery(&delivery_id).map_or(0, |id| id.created_ms()),
            delivery_id,
            account,
            body: NotifyPayload::from_stored(stored).upstream_bytes(agent),
            attempts: int(&f[4]).unwrap_or(1).max(1) as u32,
            lease_token,
            lease: Duration::from_millis(lease_token.saturating_sub(claimed_at)),
            group_index,
            seen: text(&f[6]).unwrap_or_default(),
        });
    }
    Ok((ClaimBatch { items, next_due }, dropped))
}

/// The stored body in a claim's entry: the body itself, or, for an event in its first
/// form, its whole `q` (`<exp> <agent>\n<body>`, see `first_form` in `scripts.lua`), whose
/// head ends at its first newline. A body, the JSON object the gateway stores, starts with
/// `{`; a head with a digit or a space.
fn stored_body(raw: &[u8]) -> &[u8] {
    if matches!(raw.first(), None | Some(b'{')) {
        return raw;
    }
    raw.iter()
        .position(|&b| b == b'\n')
        .map_or(raw, |newline| &raw[newline + 1..])
}

/// The outcomes of an enqueue call, one per event, and the bases of the partitions where
/// it made an account ready. `events` are the call's events in order, each its id and
/// number of deliveries: the script answers a call that stored every event with their
/// number alone (an item per event costs Redis about 700 instructions), and otherwise a
/// stored event with `ok` alone (building the triple would cost Redis a table per event),
/// every other outcome as `{outcome, id, n}`, and an event that needed a key that could not
/// be used (its account's, its partition's or its idempotency key) as `{'error',
/// message}`.
pub(super) fn parse_enqueue_reply<'e>(
    reply: Value,
    events: impl IntoIterator<Item = (&'e str, u64)>,
) -> Result<EnqueueReply, QueueError> {
    let mut items = array(reply)?;
    let mut ready = Vec::new();
    if let Some(Value::Array(f)) = items.last() {
        if f.first().and_then(text).as_deref() == Some("ready") {
            ready = f[1..].iter().filter_map(text).collect();
            items.pop();
        }
    }
    let mut events = events.into_iter();
    // every event stored: their number alone
    if let [Value::Int(stored)] = items[..] {
        let outcomes: Vec<_> = events
            .map(|(id, n)| {
                Ok(EnqueueOutcome::Stored {
                    id: id.to_string(),
                    deliveries: n,
                })
            })
            .collect();
        if i64::try_from(outcomes.len()) != Ok(stored) {
            return Err(QueueError::Protocol(format!(
                "enqueue stored {stored} events of {}",
                outcomes.len()
            )));
        }
        return Ok((outcomes, ready));
    }
    let outcomes = items
        .into_iter()
        .map(|item| {
            let event = events.next();
            if let Some(kind) = text(&item) {
                return match (kind.as_str(), event) {
                    ("ok", Some((id, n))) => Ok(Ok(EnqueueOutcome::Stored {
                        id: id.to_string(),
                        deliveries: n,
                    })),
                    _ => Err(QueueError::Protocol(format!("enqueue answered {kind:?}"))),
                };
            }
            let item = array(item)?;
            let kind = item.first().and_then(text).unwrap_or_default();
            // the earlier event's id, or an error's message
            let id = item.get(1).and_then(text).unwrap_or_default();
            let n = item.get(2).and_then(int).unwrap_or(0).max(0) as u64;
            Ok(Ok(match kind.as_str() {
                "dup" => EnqueueOutcome::Duplicate { id, deliveries: n },
                "mismatch" => EnqueueOutcome::IdempotencyMismatch,
                "full" => EnqueueOutcome::QueueFull,
                "error" => {
                    return Ok(Err(QueueError::Unavailable(format!(
                        "a key this event needs could not be used: {id}"
                    ))))
                }
                other => return Err(QueueError::Protocol(format!("enqueue answered {other:?}"))),
            }))
        })
        .collect::<Result<Vec<_>, QueueError>>()?;
    Ok((outcomes, ready))
}

/// What [`parse_enqueue_reply`] reads: each event's outcome (an error when a key it needs
/// could not be used) and the bases of the partitions where an account became ready.
pub(super) type EnqueueReply = (Vec<Result<EnqueueOutcome, QueueError>>, Vec<String>);

/// The accounts a complete call freed whose window is full, each with the time until it
/// may send again: the reply is a list of account and ms pairs (see complete.lua).
pub(super) fn parse_complete_reply(reply: Value) -> HashMap<String, Duration> {
    let Ok(pairs) = array(reply) else {
        return HashMap::new();
    };
    pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            let ms = u64::try_from(int(&pair[1])?).ok()?;
            Some((text(&pair[0])?, Duration::from_millis(ms)))
        })
        .collect()
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

pub(super) fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        other => text(other).unwrap_or_default().into_bytes(),
    }
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|s| s.parse().ok()),
    }
}

pub(super) fn array(v: Value) -> Result<Vec<Value>, QueueError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(QueueError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

pub(super) fn outcome_args(outcome: &Outcome) -> (&'static str, String, String, u64, &str) {
    match outcome {
        Outcome::Delivered { status } => ("delivered", status.to_string(), String::new(), 0, ""),
        Outcome::Retry {
            delay,
            status,
            error,
        } => (
            "retry",
            status.map(|s| s.to_string()).unwrap_or_default(),
            error.clone(),
            delay.as_millis() as u64,
            "",
        ),
        Outcome::Dead {
            reason,
            status,
            error,
        } => (
            "dead",
            status.map(|s| s.to_string()).unwrap_or_default(),
            error.clone(),
            0,
            reason.as_str(),
        ),
        Outcome::RateLimited { retry_after } => (
            "ratelimited",
            "429".into(),
            "rate limited by upstream".into(),
            retry_after.as_millis() as u64,
            "",
        ),
        Outcome::AuthFailed { status, error } => {
            ("authfailed", status.to_string(), error.clone(), 0, "")
        }
        Outcome::Released => ("released", String::new(), String::new(), 0, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_complete_reply_names_the_accounts_freed_with_a_full_window() {
        let reply = Value::Array(vec![
            bulk("acme"),
            Value::Int(1500),
            bulk("beta"),
            Value::Int(0),
        ]);
        assert_eq!(
            parse_complete_reply(reply),
            HashMap::from([
                ("acme".to_string(), Duration::from_millis(1500)),
                ("beta".to_string(), Duration::ZERO),
            ])
        );
        // without accounts to name, the reply is empty
        assert!(parse_complete_reply(Value::Array(Vec::new())).is_empty());
    }

    #[test]
    fn a_claim_reply_is_read_seven_fields_to_a_delivery() {
        let delivery = |did: &str, account: &str, token: i64, seen: &str| {
            vec![
                bulk(did),
                bulk(account),
                bulk(r#"{"app_id":1,"event":"e","body":"b"}"#),
                bulk("7"),
                Value::Int(2),
                Value::Int(token),
                bulk(seen),
            ]
        };
        // the wait, the dead letters dropped, the claim's time
        let mut flat = vec![Value::Int(-1), Value::Int(3), Value::Int(1_700_000_000_000)];
        // (ids made at 1,700,000,000,000 ms, 0x18bcfe56800, and a millisecond later)
        let (e, f, g) = (
            "018bcfe568007c3a9d1e2f3a4b5c6d7e0003:0",
            "018bcfe568017c3a9d1e2f3a4b5c6d7e0003:1",
            "018bcfe568017c3a9d1e2f3a4b5c6d7e0004:0",
        );
        // a group of two of acme, then one of beta
        flat.extend(delivery(e, "acme", 1_700_000_030_000, "1700000000000-"));
        flat.extend(delivery(f, "acme", 1_700_000_029_999, ""));
        flat.extend(delivery(g, "beta", 1_700_000_030_000, ""));
        let (batch, dropped) = parse_claim_reply(Value::Array(flat.clone())).unwrap();
        assert_eq!((batch.next_due, dropped), (None, 3));
        let [first, second, third] = &batch.items[..] else {
            panic!("three deliveries: {:?}", batch.items)
        };
        assert_eq!((first.delivery_id.as_str(), first.group_index), (e, 0));
        assert_eq!((second.delivery_id.as_str(), second.group_index), (f, 1));
        assert_eq!(
            (
                third.delivery_id.as_str(),
                third.account.as_str(),
                third.group_index
            ),
            (g, "beta", 0)
        );
        assert_eq!((first.attempts, first.created_ms), (2, 1_700_000_000_000));
        assert_eq!(second.created_ms, 1_700_000_000_001);
        assert_eq!(second.lease_token, 1_700_000_029_999);
        assert_eq!(first.lease, Duration::from_millis(30_000));
        assert_eq!(second.lease, Duration::from_millis(29_999));
        assert!(first.body.ends_with(br#","agent_id":7}"#));
        // an event in its first form comes as its whole `q`, whose head is cut
        let mut formed = vec![Value::Int(-1), Value::Int(0), Value::Int(1_700_000_000_000)];
        for q in [
            "1700000600000 \n{\"app_id\":1,\"event\":\"e\"}",
            " 7\n{\"app_id\":1,\"event\":\"e\"}",
        ] {
            let mut entry = delivery(e, "acme", 1_700_000_030_000, "");
            entry[2] = bulk(q);
            formed.extend(entry);
        }
        let (formed, _) = parse_claim_reply(Value::Array(formed)).unwrap();
        for c in &formed.items {
            assert_eq!(c.body, br#"{"app_id":1,"event":"e","agent_id":7}"#);
        }
        assert_eq!(
            (first.seen.as_str(), second.seen.as_str()),
            ("1700000000000-", "")
        );
        // a delivery cut short is the script's error, not a delivery
        flat.pop();
        assert!(matches!(
            parse_claim_reply(Value::Array(flat)),
            Err(QueueError::Protocol(_))
        ));
        // so is a reply without the claim's time, which every lease is timed from
        assert!(matches!(
            parse_claim_reply(Value::Array(vec![Value::Int(-1), Value::Int(0)])),
            Err(QueueError::Protocol(_))
        ));
    }

    #[test]
    fn an_enqueue_reply_takes_the_ids_of_stored_events_from_the_request() {
        let reply = Value::Array(vec![
            bulk("ok"),
            Value::Array(vec![bulk("dup"), bulk("earlier"), Value::Int(2)]),
            Value::Array(vec![bulk("full"), bulk(""), Value::Int(0)]),
            bulk("ok"),
            Value::Array(vec![
                bulk("error"),
                bulk("WRONGTYPE Operation against a key"),
            ]),
            Value::Array(vec![bulk("ready"), bulk("zr:{p3}"), bulk("zr:{p9}")]),
        ]);
        let events = [("a", 1), ("b", 1), ("c", 1), ("d", 3), ("e", 1)];
        let (mut outcomes, ready) = parse_enqueue_reply(reply, events).unwrap();
        assert_eq!(ready, ["zr:{p3}", "zr:{p9}"]);
        let failed = outcomes.pop().map(Result::unwrap_err);
        assert!(
            matches!(&failed, Some(QueueError::Unavailable(m)) if m.contains("WRONGTYPE")),
            "{failed:?}"
        );
        let outcomes: Vec<EnqueueOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            outcomes,
            vec![
                EnqueueOutcome::Stored {
                    id: "a".into(),
                    deliveries: 1
                },
                EnqueueOutcome::Duplicate {
                    id: "earlier".into(),
                    deliveries: 2
                },
                EnqueueOutcome::QueueFull,
                EnqueueOutcome::Stored {
                    id: "d".into(),
                    deliveries: 3
                },
            ]
        );
        let (_, ready) = parse_enqueue_reply(Value::Array(vec![bulk("ok")]), [("a", 1)]).unwrap();
        assert!(ready.is_empty());
    }

    #[test]
    fn a_call_that_stored_every_event_answers_their_number() {
        let reply = Value::Array(vec![
            Value::Int(2),
            Value::Array(vec![bulk("ready"), bulk("zr:{p3}")]),
        ]);
        let (outcomes, ready) = parse_enqueue_reply(reply, [("a", 1), ("b", 2)]).unwrap();
        assert_eq!(ready, ["zr:{p3}"]);
        let outcomes: Vec<EnqueueOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            outcomes,
            [
                EnqueueOutcome::Stored {
                    id: "a".into(),
                    deliveries: 1
                },
                EnqueueOutcome::Stored {
                    id: "b".into(),
                    deliveries: 2
                },
            ]
        );
        let (outcomes, ready) =
            parse_enqueue_reply(Value::Array(vec![Value::Int(1)]), [("a", 1)]).unwrap();
        assert_eq!((outcomes.len(), ready.len()), (1, 0));
        // another number than the events sent
        let reply = Value::Array(vec![Value::Int(3)]);
        let err = parse_enqueue_reply(reply, [("a", 1), ("b", 1)]).unwrap_err();
        assert!(matches!(err, QueueError::Protocol(_)), "{err:?}");
    }

    #[test]
    fn an_ok_beyond_the_requested_events_is_a_protocol_error() {
        let reply = Value::Array(vec![bulk("ok"), bulk("ok")]);
        let err = parse_enqueue_reply(reply, [("a", 1)]).unwrap_err();
        assert!(matches!(err, QueueError::Protocol(_)), "{err:?}");
        let reply = Value::Array(vec![bulk("stored")]);
        assert!(parse_enqueue_reply(reply, [("a", 1)]).is_err());
    }
}
