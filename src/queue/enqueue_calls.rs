//! How concurrent enqueue requests share script calls.
//!
//! Requests that arrive while an enqueue call is under way wait, and go together in the
//! next ([`super::script_queue::ScriptQueue`] commits them): [`group_calls`] makes their
//! script calls (requests of the same settings share one, up to [`GROUP_MAX_EVENTS`]
//! events; on a Redis Cluster, and in the embedded store, which holds every script to one
//! slot as a Cluster would, only requests of one partition), [`call_args`] writes each
//! call's arguments for `enqueue.lua`, and [`answer_group`] answers every request from its
//! call's reply. Each call stands alone: one that fails fails only its own requests.

use std::collections::HashMap;

use redis::Value;

use super::announce::partition_of_base;
use super::replies::parse_enqueue_reply;
use super::transport::ScriptCall;
use super::{EnqueueBatch, EnqueueOutcome, NewEvent, QueueError};
use crate::domain::Priority;

/// Most events of several requests merged into one enqueue script call, so that no call
/// holds Redis for long. One request's batch (at most 1,000 events, the API's cap) is
/// never split: it is stored whole or not at all.
const GROUP_MAX_EVENTS: usize = 64;

/// An enqueue request waiting for its group commit.
pub(super) struct PendingEnqueue {
    pub(super) batch: EnqueueBatch,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<Vec<EnqueueOutcome>, QueueError>>,
}

/// One enqueue script call of a group of requests: the requests of each of its accounts
/// (their positions in the group, in arrival order; the accounts in the order they first
/// came), which is also the order of its events' arguments and outcomes, and its event
/// count.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct EnqueueCall {
    accounts: Vec<Vec<usize>>,
    events: usize,
}

impl EnqueueCall {
    /// The call's requests in the order of their events' arguments.
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.accounts.iter().flatten().copied()
    }

    /// Adds request `i` (`batch`, of `batches`) when it fits: the call stays within
    /// [`GROUP_MAX_EVENTS`], and an account it already serves keeps the limit it has in
    /// it (the script reads each account once, before any write).
    fn join(&mut self, i: usize, batch: &EnqueueBatch, batches: &[&EnqueueBatch]) -> bool {
        let n = batch.events.len();
        if self.events + n > GROUP_MAX_EVENTS {
            return false;
        }
        match self
            .accounts
            .iter_mut()
            .find(|members| batches[members[0]].account == batch.account)
        {
            Some(members) if batches[members[0]].limit == batch.limit => members.push(i),
            Some(_) => return false,
            None => self.accounts.push(vec![i]),
        }
        self.events += n;
        true
    }
}

/// The script calls of a group of enqueue requests, in arrival order: requests that share
/// their settings (depth cap, idempotency retention) and, unless `span_partitions`, their
/// partition share a call, up to [`GROUP_MAX_EVENTS`] events (a larger request alone).
/// An account's requests keep their order: within a call, and from one call to the next,
/// which run in order.
pub(super) fn group_calls<'a>(
    batches: impl Iterator<Item = &'a EnqueueBatch>,
    span_partitions: bool,
) -> Vec<EnqueueCall> {
    let batches: Vec<&EnqueueBatch> = batches.collect();
    let mut calls: Vec<EnqueueCall> = Vec::new();
    let mut open: HashMap<(u64, u64, Option<u16>), usize> = HashMap::new();
    for (i, b) in batches.iter().enumerate() {
        let partition = (!span_partitions).then(|| b.partition());
        let key = (b.max_depth, b.idempotency_ttl_secs, partition);
        let joined = open
            .get(&key)
            .is_some_and(|&c| calls[c].join(i, b, &batches));
        if !joined {
            open.insert(key, calls.len());
            calls.push(EnqueueCall {
                accounts: vec![vec![i]],
                events: b.events.len(),
            });
        }
    }
    calls
}

/// The routing base and arguments of one enqueue script call (see enqueue.lua): the
/// settings its requests share and what most of its accounts and events share (those of
/// its first account and event), then each account's base (`base` of its partition),
/// account, event count and its limit and window unless they are the shared ones,
/// followed by its events. An account comes once in a call, its requests' events
/// together: the script counts its depth, keeps its bound and takes its idempotency keys
/// once per account.
pub(super) fn call_args(
    call: &EnqueueCall,
    group: &[PendingEnqueue],
    base: impl Fn(u16) -> String,
) -> ScriptCall {
    let head = &group[call.accounts[0][0]].batch;
    let shared_limit = head.limit;
    let shared_ttl = head.events.first().map_or(0, |e| e.ttl_ms);
    let mut args: Vec<Vec<u8>> = vec![
        head.max_depth.to_string().into_bytes(),
        head.idempotency_ttl_secs.to_string().into_bytes(),
        shared_limit.limit.to_string().into_bytes(),
        shared_limit.window_ms.to_string().into_bytes(),
        shared_ttl.to_string().into_bytes(),
    ];
    let mut routing = None;
    for members in &call.accounts {
        let lead = &group[members[0]].batch;
        let base = base(lead.partition());
        let count: usize = members.iter().map(|&i| group[i].batch.events.len()).sum();
        args.push(base.as_bytes().to_vec());
        args.push(lead.account.as_bytes().to_vec());
        args.push(count.to_string().into_bytes());
        if lead.limit == shared_limit {
            args.push(Vec::new());
        } else {
            args.push(lead.limit.limit.to_string().into_bytes());
            args.push(lead.limit.window_ms.to_string().into_bytes());
        }
        routing.get_or_insert(base);
        for event in members.iter().flat_map(|&i| &group[i].batch.events) {
            push_event_args(&mut args, event, shared_ttl);
        }
    }
    (routing.unwrap_or_default(), args)
}

/// One event's arguments of an enqueue call (see enqueue.lua): its id followed by its form,
/// its body, then what its form does not assume. The short forms (none, and `k` with an
/// idempotency key) stand for normal priority, the call's time to live `shared_ttl` and one
/// Notify call to every agent; most events take two arguments.
fn push_event_args(args: &mut Vec<Vec<u8>>, event: &NewEvent, shared_ttl: u64) {
    let key = match &event.idempotency {
        Some((key, fp)) if !key.is_empty() => Some((key, fp)),
        _ => None,
    };
    let short = event.priority == Priority::Normal
        && event.ttl_ms == shared_ttl
        && event.agents.as_slice() == [None];
    let mut id = Vec::with_capacity(37);
    id.extend_from_slice(event.id.as_str().as_bytes());
    match (short, key) {
        (true, None) => {}
        (true, Some(_)) => id.push(b'k'),
        (false, _) => id.push(b'x'),
    }
    args.push(id);
    args.push(event.payload.stored().as_bytes().to_vec());
    if !short {
        args.push(event.priority.tag().as_bytes().to_vec());
        args.push(event.ttl_ms.to_string().into_bytes());
        args.push(event.agents.len().to_string().into_bytes());
        for agent in &event.agents {
            args.push(
                agent
                    .map(|a| a.to_string())
                    .unwrap_or_default()
                    .into_bytes(),
            );
        }
        if key.is_none() {
            args.push(Vec::new());
        }
    }
    // the idempotency key and its fingerprint (in the long form, '' stands for no key)
    if let Some((key, fp)) = key {
        args.push(key.as_bytes().to_vec());
        args.push(fp.as_bytes().to_vec());
    }
}

/// Answers each request of `group` from the reply of its call, and returns the partitions
/// whose accounts may have become ready (to announce). Each call stands alone: a failing
/// call fails only its own requests, and a key the script could not use only the requests
/// whose events need it.
pub(super) fn answer_group(
    group: Vec<PendingEnqueue>,
    calls: &[EnqueueCall],
    replies: Vec<Result<Value, QueueError>>,
) -> Vec<u16> {
    let mut group: Vec<Option<PendingEnqueue>> = group.into_iter().map(Some).collect();
    let mut announce: Vec<u16> = Vec::new();
    for (call, reply) in calls.iter().zip(replies) {
        // A failed call may still have run (its reply lost to a timeout, or it failed
        // part-way) and made its accounts ready: their partitions are announced too.
        if reply.is_err() {
            announce.extend(
                call.accounts
                    .iter()
                    .filter_map(|members| group[members[0]].as_ref())
                    .map(|p| p.batch.partition()),
            );
        }
        // the call's events in the order of its arguments: what an `ok` answers
        let events = call
            .members()
            .filter_map(|i| group[i].as_ref())
            .flat_map(|p| &p.batch.events)
            .map(|e| (e.id.as_str(), e.agents.len() as u64));
        match reply.and_then(|reply| parse_enqueue_reply(reply, events)) {
            Err(e) => {
                for i in call.members() {
                    answer(&mut group, i, Err(e.clone()));
                }
            }
            Ok((outcomes, ready)) => {
                announce.extend(ready.iter().filter_map(|base| partition_of_base(base)));
                let mut outcomes = outcomes.into_iter();
                for i in call.members() {
                    let n = group[i].as_ref().map_or(0, |p| p.batch.events.len());
                    let mine: Vec<Result<EnqueueOutcome, QueueError>> =
                        outcomes.by_ref().take(n).collect();
                    let result = if mine.len() == n {
                        mine.into_iter().collect()
                    } else {
                        Err(QueueError::Protocol(
                            "enqueue answered too few outcomes".into(),
                        ))
                    };
                    answer(&mut group, i, result);
                }
            }
        }
    }
    announce.sort_unstable();
    announce.dedup();
    announce
}

/// Answers request `i` of a group, once.
fn answer(
    group: &mut [Option<PendingEnqueue>],
    i: usize,
    result: Result<Vec<EnqueueOutcome>, QueueError>,
) {
    if let Some(p) = group[i].take() {
        // The caller may have given up (its request was cancelled): nothing to do.
        let _ = p.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventId, NotifyPayload};
    use crate::queue::RateLimit;

    fn batch(account: &str, events: usize, limit: u32) -> EnqueueBatch {
        let event = NewEvent {
            id: EventId::new(0),
            priority: Priority::Normal,
            ttl_ms: 0,
            payload: NotifyPayload::new(1, "e", None),
            agents: vec![None],
            idempotency: None,
        };
        EnqueueBatch {
            account: account.into(),
            limit: RateLimit {
                limit,
                window_ms: 60_000,
            },
            max_depth: 1000,
            idempotency_ttl_secs: 60,
            events: vec![event; events],
        }
    }

    #[test]
    fn a_group_makes_calls_of_accounts_in_arrival_order_capped_in_size() {
        let group = [
            batch("a", 1, 100),
            batch("b", 2, 100),
            batch("a", 3, 100),
            // another limit for an account the call serves: the next call
            batch("a", 1, 50),
            batch("b", GROUP_MAX_EVENTS - 4, 100),
            batch("a", 1, 100),
            // too many to join: alone
            batch("c", 1000, 100),
            batch("d", 1, 100),
        ];
        let call = |accounts: Vec<Vec<usize>>, events| EnqueueCall { accounts, events };
        assert_eq!(
            group_calls(group.iter(), true),
            [
                call(vec![vec![0, 2], vec![1]], 6),
                call(vec![vec![3], vec![4]], GROUP_MAX_EVENTS - 3),
                call(vec![vec![5]], 1),
                call(vec![vec![6]], 1000),
                // (after a call of its own, never in an earlier call: it might have been
                // of an account of that call)
                call(vec![vec![7]], 1),
            ]
        );
        assert_eq!(
            group_calls(group.iter(), true)[0]
                .members()
                .collect::<Vec<_>>(),
            [0, 2, 1],
            "an account's requests are next to each other, as their arguments are"
        );
        // Other settings never share a call.
        let mut other = batch("e", 1, 100);
        other.idempotency_ttl_secs = 86_400;
        let mixed = [batch("a", 1, 100), other, batch("b", 1, 100)];
        assert_eq!(
            group_calls(mixed.iter(), true),
            [call(vec![vec![0], vec![2]], 2), call(vec![vec![1]], 1)]
        );
    }

    #[test]
    fn most_events_take_two_arguments_and_an_account_its_limit_only_when_its_own() {
        let (reply, _) = tokio::sync::oneshot::channel();
        let mut a = batch("a", 4, 100);
        a.events[1].idempotency = Some(("k".into(), "fp".into()));
        a.events[2].priority = Priority::High;
        a.events[3].agents = vec![Some(7), None];
        let b = batch("b", 1, 5);
        let ids: Vec<String> = a
            .events
            .iter()
            .chain(&b.events)
            .map(|e| e.id.as_str().to_string())
            .collect();
        let (reply_b, _) = tokio::sync::oneshot::channel();
        let group = [
            PendingEnqueue { batch: a, reply },
            PendingEnqueue {
                batch: b,
                reply: reply_b,
            },
        ];
        let call = EnqueueCall {
            accounts: vec![vec![0], vec![1]],
            events: 5,
        };
        let (routing, args) = call_args(&call, &group, |p| format!("z:{{p{p}}}"));
        let args: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let body = r#"{"app_id":1,"event":"e"}"#;
        // (an id followed by its form, when not the shortest)
        let (keyed, high, agents) = (
            format!("{}k", ids[1]),
            format!("{}x", ids[2]),
            format!("{}x", ids[3]),
        );
        let expected = [
            // the call's settings, then what its accounts and events share
            vec!["1000", "60", "100", "60000", "0"],
            // a, of the shared limit
            vec!["z:{p0}", "a", "4", ""],
            vec![&ids[0], body],
            vec![&keyed, body, "k", "fp"],
            vec![&high, body, "h", "0", "1", "", ""],
            vec![&agents, body, "n", "0", "2", "7", "", ""],
            // b, of its own limit
            vec!["z:{p0}", "b", "1", "5", "60000"],
            vec![&ids[4], body],
        ]
        .concat();
        assert_eq!(routing, "z:{p0}");
        assert_eq!(args, expected);
    }

    #[test]
    fn on_a_cluster_only_accounts_of_one_partition_share_a_call() {
        let in_partition = |account: &str, partition: u16| {
            let mut b = batch(account, 1, 100);
            for e in &mut b.events {
                e.id = EventId::new(partition);
            }
            b
        };
        let group = [
            in_partition("a", 1),
            in_partition("b", 2),
            in_partition("c", 1),
            in_partition("d", 2),
        ];
        let call = |accounts: Vec<Vec<usize>>| EnqueueCall {
            accounts,
            events: 2,
        };
        assert_eq!(
            group_calls(group.iter(), false),
            [call(vec![vec![0], vec![2]]), call(vec![vec![1], vec![3]])]
        );
        assert_eq!(group_calls(group.iter(), true).len(), 1);
    }
}
