//! What a claim leased, read. The claim script leases calls by their ids alone (see
//! `claim.lua`): Redis's Lua would cost more to read and cut each event than Redis costs
//! to hand it over whole. The gateway then reads every leased call's event with plain
//! commands (an `HGET` of an event's first form, else an `HGETALL`: see `read_events`
//! in script_queue.rs), sends those still waiting to be sent,
//! and ends the others' leases itself, by a completion of a kind only it sends (see
//! `complete.lua`): a stale entry of an event that has finished or gone, an expired
//! event, and a call whose lease token is not above the one its event recorded.

use std::time::Duration;

use redis::Value;

use super::{Claimed, QueueError};
use crate::domain::{EventId, NotifyPayload};

/// A claim's reply read (see `claim.lua`): the wait it reported, the dead letters its
/// sweep dropped, its time (Redis ms) and the calls it leased, in order.
#[derive(Debug, Default)]
pub(super) struct Leased {
    /// Until more work is due in the partition (`None`: unknown, or none).
    pub next_due: Option<Duration>,
    /// Dead letters the claim's sweep dropped.
    pub dropped: u64,
    /// The claim's time, Redis ms.
    pub claimed_at: u64,
    /// The calls leased, each lease group's in sending order.
    pub calls: Vec<LeasedCall>,
}

/// One call a claim leased, before its event is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeasedCall {
    /// `{event id}:{index}`.
    pub delivery_id: String,
    /// The account.
    pub account: String,
    /// The lease's end, which is its token.
    pub lease_token: u64,
    /// Its place in its lease group (0 for the first).
    pub place: u32,
    /// The time of the claim that leased it (Redis ms).
    pub claimed_at: u64,
}

/// Why the gateway ends a lease it did not send, as the completion's kind names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unsent {
    /// The event has finished or gone: the list held a stale entry.
    Stale,
    /// Its time to live passed before delivery: a dead letter since `at`, the time (Redis
    /// ms) of the claim that found it so.
    Expired {
        /// The claim's time.
        at: u64,
    },
    /// Its token is not above `c`, the end of a lease of it that ended early (granted
    /// before the account recorded its leases' ends): put back, and the account's next
    /// leases end after that one.
    Again {
        /// The event's `c`.
        above: u64,
    },
    /// Its event could not be read, or it follows one put back in its group: back to the
    /// front, its attempt not counted (a release).
    Unread,
}

impl Unsent {
    /// The completion's kind, and the value its delay argument carries.
    pub fn kind(self) -> (&'static str, u64) {
        match self {
            Unsent::Stale => ("stale", 0),
            Unsent::Expired { at } => ("expired", at),
            Unsent::Again { above } => ("again", above),
            Unsent::Unread => ("released", 0),
        }
    }

    /// Whether it goes back to the front of its list (so must the rest of its group).
    pub fn goes_back(self) -> bool {
        matches!(self, Unsent::Again { .. } | Unsent::Unread)
    }
}

/// What to do with a leased call, once its event is read.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Send it.
    Send(Claimed),
    /// End its lease unsent.
    End(Unsent),
}

/// The event as `HGETALL` read it: field and value pairs (an array, or a RESP3 map); a key
/// that holds no hash reads as none.
pub(super) struct EventFields(Vec<(Vec<u8>, Vec<u8>)>);

impl EventFields {
    /// From `HGETALL`'s reply.
    pub fn of(reply: Value) -> Result<Self, QueueError> {
        let bulk = |v: Value| match v {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            other => Err(QueueError::Protocol(format!(
                "HGETALL answered {other:?} as a field"
            ))),
        };
        let mut fields = Vec::new();
        match reply {
            Value::Nil => {}
            Value::Array(items) => {
                let mut items = items.into_iter();
                while let (Some(f), Some(v)) = (items.next(), items.next()) {
                    fields.push((bulk(f)?, bulk(v)?));
                }
            }
            Value::Map(pairs) => {
                for (f, v) in pairs {
                    fields.push((bulk(f)?, bulk(v)?));
                }
            }
            other => return Err(QueueError::Protocol(format!("HGETALL answered {other:?}"))),
        }
        Ok(EventFields(fields))
    }

    /// An event in its first form, as an `HGET` of its `q` read it.
    pub fn first_form(q: Vec<u8>) -> Self {
        EventFields(vec![(b"q".to_vec(), q)])
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(f, _)| f == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// What to do with `call`, leased by a claim at `claimed_at` (Redis ms), whose event read
/// `event`; `claimed_at_text` is that time as text, and `expiry_at` the time its time to
/// live is checked against (the first claim's of the calls claimed together: see
/// `claim_each`). Checks what a claim that read the events would: the call's status
/// (missing while it is queued; nothing is, of an event gone), its event's time to live,
/// and, for a call whose earlier lease ended early, that this lease's token is above that
/// one's.
pub(super) fn judge(
    call: &LeasedCall,
    event: &EventFields,
    claimed_at: u64,
    claimed_at_text: &str,
    expiry_at: u64,
) -> Verdict {
    let k = call.delivery_id.rsplit_once(':').map_or("0", |(_, k)| k);
    let field = |name: &str| format!("{name}{k}");
    // An event of one call in its first form (see `first_form` in scripts.lua): `q` holds
    // its time to live, agent and body, and its call is queued.
    let first = event.get("q").filter(|q| !q.is_empty());
    let (exp, agent, body, status, ended, several, c) = match first {
        Some(q) => {
            let (head, body) = first_form(q);
            let (exp, agent) = head.split_once(' ').unwrap_or((head, ""));
            (exp, agent, body, "queued", None, false, None)
        }
        None => {
            let Some(status) = event
                .text(&field("s"))
                .or_else(|| event.get("body").map(|_| "queued"))
            else {
                return Verdict::End(Unsent::Stale);
            };
            (
                event.text("exp").unwrap_or(""),
                event.text(&field("ag")).unwrap_or(""),
                event.get("body").unwrap_or_default(),
                status,
                event.text(&field("at")),
                event.text("n").is_some_and(|n| n != "1"),
                event.text(&field("c")).and_then(|c| c.parse::<u64>().ok()),
            )
        }
    };
    if !matches!(status, "queued" | "retrying" | "delivering") {
        return Verdict::End(Unsent::Stale);
    }
    if exp
        .parse::<u64>()
        .is_ok_and(|exp| exp > 0 && exp <= expiry_at)
    {
        return Verdict::End(Unsent::Expired { at: expiry_at });
    }
    if let Some(above) = c.filter(|c| *c >= call.lease_token) {
        return Verdict::End(Unsent::Again { above });
    }
    let attempts = match ended {
        None => 1,
        Some(at) => at.parse::<u32>().unwrap_or(0).saturating_add(1),
    };
    Verdict::Send(Claimed {
        // the time the id carries (the gateway's clock when it accepted the event, which
        // is the event's time of creation everywhere)
        created_ms: EventId::of_delivery(&call.delivery_id).map_or(0, |id| id.created_ms()),
        seen: seen(claimed_at_text, ended, agent, several),
        delivery_id: call.delivery_id.clone(),
        account: call.account.clone(),
        body: NotifyPayload::from_stored(String::from_utf8_lossy(body).into_owned())
            .upstream_bytes(agent.parse().ok()),
        attempts,
        lease_token: call.lease_token,
        lease: Duration::from_millis(call.lease_token.saturating_sub(claimed_at)),
        group_index: call.place,
    })
}

/// What the call's completion need not read again, handed back with its success (see
/// complete.lua): for an event of one call, the claim's time (13 digits), the attempts
/// that ended as read (`-`: none) and, when the call has an agent (an empty one is none),
/// a space and the agent; nothing (the completion reads the event) for one of several
/// calls.
fn seen(claimed_at: &str, ended: Option<&str>, agent: &str, several: bool) -> String {
    if several {
        return String::new();
    }
    let ended = ended.unwrap_or("-");
    let mut seen = String::with_capacity(claimed_at.len() + ended.len() + 1 + agent.len());
    seen.push_str(claimed_at);
    seen.push_str(ended);
    if !agent.is_empty() {
        seen.push(' ');
        seen.push_str(agent);
    }
    seen
}

/// An event's first form, `q` = `<exp> <agent>\n<body>` (see `first_form` in
/// `scripts.lua`), as its head (before the first newline) and its body. A `q` without a
/// newline (never written so) is all body.
fn first_form(q: &[u8]) -> (&str, &[u8]) {
    match q.iter().position(|&b| b == b'\n') {
        Some(newline) => (
            std::str::from_utf8(&q[..newline]).unwrap_or(""),
            &q[newline + 1..],
        ),
        None => ("", q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::replies::parse_claim_reply;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn fields(pairs: &[(&str, &str)]) -> EventFields {
        EventFields::of(Value::Array(
            pairs.iter().flat_map(|(f, v)| [bulk(f), bulk(v)]).collect(),
        ))
        .unwrap()
    }

    const AT: u64 = 1_700_000_000_000;
    const BODY: &str = r#"{"app_id":1,"event":"e"}"#;

    fn leased(id: &str, token: u64) -> LeasedCall {
        LeasedCall {
            delivery_id: id.into(),
            account: "acme".into(),
            lease_token: token,
            place: 0,
            claimed_at: AT,
        }
    }

    fn verdict(id: &str, event: &EventFields) -> Verdict {
        judge(&leased(id, AT + 30_000), event, AT, &AT.to_string(), AT)
    }

    #[test]
    fn a_claim_reply_is_read_a_group_head_then_its_ids() {
        let (e, f, g) = ("e:0", "f:1", "g:0");
        let mut flat = vec![Value::Int(-1), Value::Int(3), Value::Int(AT as i64)];
        flat.extend([bulk("acme"), Value::Int(2), Value::Int(AT as i64 + 30_000)]);
        flat.extend([bulk(e), bulk(f)]);
        flat.extend([bulk("beta"), Value::Int(1), Value::Int(AT as i64 + 30_000)]);
        flat.push(bulk(g));
        let read = parse_claim_reply(Value::Array(flat.clone())).unwrap();
        assert_eq!(
            (read.next_due, read.dropped, read.claimed_at),
            (None, 3, AT)
        );
        // the group's later deliveries' leases end a millisecond earlier each
        let calls: Vec<(&str, &str, u64, u32)> = read
            .calls
            .iter()
            .map(|c| {
                (
                    c.delivery_id.as_str(),
                    c.account.as_str(),
                    c.lease_token - AT,
                    c.place,
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                (e, "acme", 30_000, 0),
                (f, "acme", 29_999, 1),
                (g, "beta", 30_000, 0)
            ]
        );
        let protocol = |v: Vec<Value>| {
            matches!(
                parse_claim_reply(Value::Array(v)),
                Err(QueueError::Protocol(_))
            )
        };
        // a delivery cut short, a group's head cut short, a group of none and a reply
        // without the claim's time are the script's errors
        flat.pop();
        assert!(protocol(flat.clone()));
        flat.truncate(flat.len() - 2);
        assert!(protocol(flat));
        let mut empty = vec![Value::Int(-1), Value::Int(0), Value::Int(AT as i64)];
        empty.extend([bulk("acme"), Value::Int(0), Value::Int(AT as i64 + 30_000)]);
        assert!(protocol(empty));
        assert!(protocol(vec![Value::Int(-1), Value::Int(0)]));
    }

    fn sent(v: Verdict) -> Claimed {
        match v {
            Verdict::Send(c) => c,
            Verdict::End(u) => panic!("ended {u:?}"),
        }
    }

    #[test]
    fn an_event_in_its_first_form_is_sent_with_the_agent_of_its_head() {
        let q = format!("{} 5\n{BODY}", AT + 60_000);
        let c = sent(verdict("e:0", &fields(&[("q", &q), ("acct", "acme")])));
        assert_eq!(c.body, br#"{"app_id":1,"event":"e","agent_id":5}"#);
        assert_eq!((c.attempts, c.seen.as_str()), (1, "1700000000000- 5"));
        assert_eq!(c.lease, Duration::from_millis(30_000));
        // without a time to live or an agent
        let q = format!(" \n{BODY}");
        let c = sent(verdict("e:0", &fields(&[("q", &q), ("acct", "acme")])));
        assert_eq!(
            (c.body.as_slice(), c.seen.as_str()),
            (BODY.as_bytes(), "1700000000000-")
        );
    }

    #[test]
    fn a_written_out_event_gives_its_attempts_agent_and_calls() {
        // a call put back for a retry, with its agent, whose second attempt ended
        let c = sent(verdict(
            "e:0",
            &fields(&[
                ("q", ""),
                ("body", BODY),
                ("acct", "acme"),
                ("s0", "queued"),
                ("at0", "2"),
                ("ag0", "9"),
            ]),
        ));
        assert_eq!((c.attempts, c.seen.as_str()), (3, "17000000000002 9"));
        assert!(c.body.ends_with(b"\"agent_id\":9}"));
        // call 1 of an event of two: its completion reads the event
        let c = sent(verdict(
            "e:1",
            &fields(&[("body", BODY), ("acct", "acme"), ("n", "2"), ("ag1", "7")]),
        ));
        assert_eq!((c.attempts, c.seen.as_str()), (1, ""));
        assert!(c.body.ends_with(b"\"agent_id\":7}"));
        // a head a put-back left `retrying` is sent
        let c = sent(verdict(
            "e:0",
            &fields(&[("body", BODY), ("s0", "retrying"), ("at0", "1")]),
        ));
        assert_eq!(c.attempts, 2);
    }

    #[test]
    fn finished_gone_expired_and_outrun_calls_are_not_sent() {
        let ended = |id: &str, pairs: &[(&str, &str)]| match verdict(id, &fields(pairs)) {
            Verdict::End(u) => Some(u),
            Verdict::Send(_) => None,
        };
        // gone (or a summary, which reads as nil), finished, dead
        assert_eq!(ended("e:0", &[]), Some(Unsent::Stale));
        assert_eq!(
            EventFields::of(Value::Nil).map(|e| e.0.is_empty()).ok(),
            Some(true)
        );
        for status in ["delivered", "dead", "expired"] {
            assert_eq!(
                ended("e:0", &[("body", ""), ("s0", status)]),
                Some(Unsent::Stale)
            );
        }
        // expired at or before the claim's time, in the first form or written out
        let q = format!("{AT} \n{BODY}");
        assert_eq!(ended("e:0", &[("q", &q)]), Some(Unsent::Expired { at: AT }));
        let exp = (AT - 1).to_string();
        assert_eq!(
            ended("e:0", &[("body", BODY), ("exp", &exp)]),
            Some(Unsent::Expired { at: AT })
        );
        assert_eq!(ended("e:0", &[("body", BODY), ("exp", "0")]), None);
        // a token not above the end of a lease that ended early
        let c = (AT + 30_000).to_string();
        assert_eq!(
            ended("e:0", &[("body", BODY), ("at0", "0"), ("c0", &c)]),
            Some(Unsent::Again { above: AT + 30_000 })
        );
        let c = (AT + 29_999).to_string();
        assert_eq!(
            ended("e:0", &[("body", BODY), ("at0", "0"), ("c0", &c)]),
            None
        );
    }
}
