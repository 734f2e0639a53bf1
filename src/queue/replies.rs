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

/// The values of one claimed delivery in a claim's reply.
const CLAIM_FIELDS: usize = 3;

/// The claimed deliveries, and how many dead letters the claim dropped. The reply is flat
/// (see claim.lua): the wait, the count and the claim's time (Redis ms), then each lease
/// group's head (its account, its number of deliveries and its lease's end) followed by
/// its deliveries' [`CLAIM_FIELDS`] values each: id, stored body, and what else the
/// claim read of the call ('' for the most common: a first attempt of an event of one
/// call). A delivery's token is its group's lease's end less its place in the group, in
/// ms, and its lease lasts from the claim's time to its token: the reply carries neither
/// per delivery, nor the account, the attempts, the agent or what a completion need not
/// read again, as each value it carries costs Redis and the gateway's parser.
pub(super) fn parse_claim_reply(reply: Value) -> Result<(ClaimBatch, u64), QueueError> {
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
    let claimed_at_text = claimed_at.to_string();
    let mut items: Vec<Claimed> = Vec::with_capacity(reply.len() / CLAIM_FIELDS);
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
            let (Some(id), Some(body), Some(rest)) = (reply.next(), reply.next(), reply.next())
            else {
                return Err(short());
            };
            let delivery_id = text(&id).unwrap_or_default();
            let raw = match body {
                Value::BulkString(b) => b,
                other => bytes(&other),
            };
            let (head, stored) = first_form(&raw);
            let rest = text(&rest).unwrap_or_default();
            let read = ReadOfCall::parse(&rest, head);
            let lease_token = (lease_end.max(0) as u64).saturating_sub(place);
            items.push(Claimed {
                // the time the id carries (the gateway's clock when it accepted the event,
                // which is the event's time of creation everywhere)
                created_ms: EventId::of_delivery(&delivery_id).map_or(0, |id| id.created_ms()),
                seen: read.seen(&claimed_at_text),
                delivery_id,
                account: account.clone(),
                body: NotifyPayload::from_stored(String::from_utf8_lossy(stored).into_owned())
                    .upstream_bytes(read.agent.parse().ok()),
                attempts: read.attempts(),
                lease_token,
                lease: Duration::from_millis(lease_token.saturating_sub(claimed_at)),
                group_index: place as u32,
            });
        }
    }
    Ok((ClaimBatch { items, next_due }, dropped))
}

/// What a claim read of a call beside its body: the attempts that ended as the event
/// holds them (`-`: none), its agent (empty: every agent), and whether its event has
/// several calls.
struct ReadOfCall<'a> {
    ended: &'a str,
    agent: &'a str,
    several: bool,
}

impl<'a> ReadOfCall<'a> {
    /// From a claim entry's third value, and the head of its body's first form, if any
    /// (where the agent of the most common call, whose third value is empty, is).
    fn parse(rest: &'a str, head: Option<&'a str>) -> Self {
        if rest.is_empty() {
            return ReadOfCall {
                ended: "-",
                agent: head.and_then(|h| h.split_once(' ')).map_or("", |(_, a)| a),
                several: false,
            };
        }
        let (rest, several) = match rest.strip_suffix(" +") {
            Some(rest) => (rest, true),
            None => (rest, false),
        };
        let (ended, agent) = rest.split_once(' ').unwrap_or((rest, ""));
        ReadOfCall {
            ended,
            agent,
            several,
        }
    }

    /// The attempts, this one included.
    fn attempts(&self) -> u32 {
        match self.ended {
            "-" => 1,
            ended => ended.parse::<u32>().unwrap_or(0).saturating_add(1),
        }
    }

    /// What the call's completion need not read again, handed back with its success (see
    /// complete.lua): for an event of one call, the claim's time (13 digits), the
    /// attempts that ended as read (`-`: none) and, when the call has an agent (an empty
    /// one is none), a space and the agent; for one of several, nothing (the completion
    /// reads the event).
    fn seen(&self, claimed_at: &str) -> String {
        if self.several {
            return String::new();
        }
        let mut seen =
            String::with_capacity(claimed_at.len() + self.ended.len() + 1 + self.agent.len());
        seen.push_str(claimed_at);
        seen.push_str(self.ended);
        if !self.agent.is_empty() {
            seen.push(' ');
            seen.push_str(self.agent);
        }
        seen
    }
}

/// A claim entry's stored body split: for an event in its first form, its whole `q`
/// (`<exp> <agent>\n<body>`, see `first_form` in `scripts.lua`), whose head (before its
/// first newline) and body it gives apart; else the body itself, with no head. A body,
/// the JSON object the gateway stores, starts with `{`; a head with a digit or a space.
fn first_form(raw: &[u8]) -> (Option<&str>, &[u8]) {
    if matches!(raw.first(), None | Some(b'{')) {
        return (None, raw);
    }
    match raw.iter().position(|&b| b == b'\n') {
        Some(newline) => (
            std::str::from_utf8(&raw[..newline]).ok(),
            &raw[newline + 1..],
        ),
        None => (None, raw),
    }
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
    fn a_claim_reply_is_read_a_group_head_then_three_values_to_a_delivery() {
        // the wait, the dead letters dropped, the claim's time
        let mut flat = vec![Value::Int(-1), Value::Int(3), Value::Int(1_700_000_000_000)];
        // (ids made at 1,700,000,000,000 ms, 0x18bcfe56800, and a millisecond later)
        let (e, f, g, h) = (
            "018bcfe568007c3a9d1e2f3a4b5c6d7e0003:0",
            "018bcfe568017c3a9d1e2f3a4b5c6d7e0003:1",
            "018bcfe568017c3a9d1e2f3a4b5c6d7e0004:0",
            "018bcfe568017c3a9d1e2f3a4b5c6d7e0005:0",
        );
        let body = r#"{"app_id":1,"event":"e"}"#;
        // a group of two of acme: a first attempt of an event of one call in its first
        // form, whose agent is in its head; call 1 of an event of several, whose second
        // attempt this is, for agent 7
        flat.extend([bulk("acme"), Value::Int(2), Value::Int(1_700_000_030_000)]);
        flat.extend([bulk(e), bulk(&format!("1700000600000 5\n{body}")), bulk("")]);
        flat.extend([bulk(f), bulk(body), bulk("1 7 +")]);
        // then one of beta: a first attempt of an event written out, for agent 9, and
        // one of gamma: a third attempt, for every agent
        flat.extend([bulk("beta"), Value::Int(1), Value::Int(1_700_000_030_000)]);
        flat.extend([bulk(g), bulk(body), bulk("- 9")]);
        flat.extend([bulk("gamma"), Value::Int(1), Value::Int(1_700_000_030_000)]);
        flat.extend([bulk(h), bulk(body), bulk("2 ")]);
        let (batch, dropped) = parse_claim_reply(Value::Array(flat.clone())).unwrap();
        assert_eq!((batch.next_due, dropped), (None, 3));
        let [first, second, third, fourth] = &batch.items[..] else {
            panic!("four deliveries: {:?}", batch.items)
        };
        let place = |c: &Claimed| (c.delivery_id.clone(), c.account.clone(), c.group_index);
        assert_eq!(place(first), (e.into(), "acme".into(), 0));
        assert_eq!(place(second), (f.into(), "acme".into(), 1));
        assert_eq!(place(third), (g.into(), "beta".into(), 0));
        assert_eq!(place(fourth), (h.into(), "gamma".into(), 0));
        assert_eq!(
            (first.created_ms, second.created_ms),
            (1_700_000_000_000, 1_700_000_000_001)
        );
        // the group's later deliveries' leases end a millisecond earlier each
        assert_eq!(
            (first.lease_token, second.lease_token, third.lease_token),
            (1_700_000_030_000, 1_700_000_029_999, 1_700_000_030_000)
        );
        assert_eq!(first.lease, Duration::from_millis(30_000));
        assert_eq!(second.lease, Duration::from_millis(29_999));
        let attempts: Vec<u32> = batch.items.iter().map(|c| c.attempts).collect();
        assert_eq!(attempts, [1, 2, 1, 3]);
        let agents: Vec<&str> = batch
            .items
            .iter()
            .map(|c| std::str::from_utf8(&c.body).unwrap())
            .collect();
        assert_eq!(
            agents,
            [
                r#"{"app_id":1,"event":"e","agent_id":5}"#,
                r#"{"app_id":1,"event":"e","agent_id":7}"#,
                r#"{"app_id":1,"event":"e","agent_id":9}"#,
                body,
            ]
        );
        // what a completion need not read again: of an event of one call only, the
        // claim's time, then the attempts that ended ('-': none), then its agent
        let seen: Vec<&str> = batch.items.iter().map(|c| c.seen.as_str()).collect();
        assert_eq!(
            seen,
            ["1700000000000- 5", "", "1700000000000- 9", "17000000000002"]
        );
        // a replayed call (its attempts set to 0), with and without an agent, and a first
        // attempt of an event of several calls, for every agent
        let mut more = vec![Value::Int(-1), Value::Int(0), Value::Int(1_700_000_000_000)];
        more.extend([bulk("acme"), Value::Int(3), Value::Int(1_700_000_030_000)]);
        for rest in ["0 7", "0 ", "-  +"] {
            more.extend([bulk(e), bulk(body), bulk(rest)]);
        }
        let (more, _) = parse_claim_reply(Value::Array(more)).unwrap();
        let read: Vec<(u32, &str, bool)> = more
            .items
            .iter()
            .map(|c| {
                (
                    c.attempts,
                    c.seen.as_str(),
                    c.body.ends_with(b"\"agent_id\":7}"),
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                (1, "17000000000000 7", true),
                (1, "17000000000000", false),
                (1, "", false)
            ]
        );
        // a group's head that names no delivery is the script's error
        let mut empty = vec![Value::Int(-1), Value::Int(0), Value::Int(1_700_000_000_000)];
        empty.extend([bulk("acme"), Value::Int(0), Value::Int(1_700_000_030_000)]);
        assert!(matches!(
            parse_claim_reply(Value::Array(empty)),
            Err(QueueError::Protocol(_))
        ));
        // a delivery cut short is the script's error, not a delivery
        flat.pop();
        assert!(matches!(
            parse_claim_reply(Value::Array(flat.clone())),
            Err(QueueError::Protocol(_))
        ));
        // and so is a group's head cut short
        flat.truncate(flat.len() - 4);
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
