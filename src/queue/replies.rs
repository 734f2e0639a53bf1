//! The scripts' replies read into the queue's types, and outcomes written as script
//! arguments.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::leased::{Leased, LeasedCall};
use super::{CallStatus, EnqueueOutcome, Outcome, QueueError};

/// A call status as a script stored it.
pub(super) fn call_status(text: &str) -> Result<CallStatus, QueueError> {
    CallStatus::parse(text)
        .ok_or_else(|| QueueError::Protocol(format!("unknown call status {text:?}")))
}

/// A claim's reply read (see claim.lua): the wait, the dead letters dropped and the
/// claim's time (Redis ms), then each lease group's head (its account, its number of
/// deliveries and its lease's end) followed by its deliveries' ids. A delivery's token is
/// its group's lease's end less its place in the group, in ms, and its lease lasts from
/// the claim's time to its token: the reply carries neither per delivery, as each value
/// it carries costs Redis and the gateway's parser.
pub(super) fn parse_claim_reply(reply: Value) -> Result<Leased, QueueError> {
    let short = || QueueError::Protocol("short claim entry".into());
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
    let mut calls: Vec<LeasedCall> = Vec::with_capacity(reply.len());
    while let Some(account) = reply.next() {
        let account = text(&account).unwrap_or_default();
        // (a group has at least one delivery: a head without one is the script's error)
        let (Some(n), Some(lease_end)) = (
            reply.next().and_then(|v| int(&v)).filter(|n| *n > 0),
            reply.next().and_then(|v| int(&v)),
        ) else {
            return Err(short());
        };
        for place in 0..n as u64 {
            let Some(id) = reply.next() else {
                return Err(short());
            };
            calls.push(LeasedCall {
                delivery_id: text(&id).unwrap_or_default(),
                account: account.clone(),
                lease_token: (lease_end.max(0) as u64).saturating_sub(place),
                place: place as u32,
                claimed_at,
            });
        }
    }
    Ok(Leased {
        next_due,
        dropped,
        claimed_at,
        calls,
    })
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
