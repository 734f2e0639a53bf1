//! Operator endpoints (admin keys only): queue overview, dead letters (list, replay,
//! purge), pause/resume, runtime accounts, and `GET /metrics`.
//!
//! Every admin call needs `Authorization: Bearer <key>` of a client with `admin = true`
//! (401 without a valid key, 403 with a non-admin key or one that does not reach the
//! account).

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{AccountInfo, AccountSpec, AccountStoreError};
use crate::api::extract::{
    forbidden, read_body, require_json, unregistered_account, Admin, AdminAccount, AdminTarget,
};
use crate::config::valid_name;
use crate::domain::partition_of;
use crate::error::{ApiError, ErrorCode};
use crate::queue::{rfc3339_ms, AccountStats, DeadLetterSelection, QueueError, RateLimit};
use crate::state::AppState;

/// Largest page of dead letters, and of `GET /v1/queues`.
pub const MAX_PAGE: u64 = 1000;

/// Largest offset into the dead letters (well within the integers Lua handles exactly).
pub const MAX_OFFSET: u64 = 1_000_000_000_000;

/// Largest body of an admin request, in bytes.
const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// One account in `GET /v1/queues`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// The account.
    pub account: String,
    /// Undelivered Notify calls (queued, in flight, awaiting retry).
    pub depth: u64,
    /// Calls in flight.
    pub in_flight: u64,
    /// Calls waiting for a scheduled retry.
    pub scheduled_retries: u64,
    /// Dead letters.
    pub dead: u64,
    /// Age of the oldest undelivered event, in seconds.
    pub oldest_age_seconds: Option<f64>,
    /// Notify calls started in the current rolling window.
    pub sent_in_window: u64,
    /// Notify calls the account may start per window (absent when the account is no longer
    /// configured or registered).
    pub limit: Option<u32>,
    /// The account's rolling window, in seconds (absent with `limit`).
    pub window_seconds: Option<f64>,
    /// Notify calls delivered since the account was first seen.
    pub delivered: u64,
    /// Upstream 429 answers since the account was first seen.
    pub upstream_429: u64,
    /// Delivery held by an operator.
    pub paused: bool,
    /// Delivery held because upstream refused the credentials.
    pub auth_failed: bool,
    /// When the account may send next (RFC 3339), if it has work it may send.
    pub next_send_at: Option<String>,
    /// One word for what the account is doing, most urgent first: `auth_failed`, `paused`,
    /// `rate_limited` (its next send is more than a second away although its window has
    /// room: an upstream 429 pause), `window_full` (waiting for its rolling window),
    /// `sending` (work queued) or `idle`.
    pub state: &'static str,
}

/// Sums over every account the key reaches (whatever `q` and the page).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct QueueTotals {
    /// Accounts.
    pub accounts: u64,
    /// Undelivered Notify calls.
    pub depth: u64,
    /// Calls in flight.
    pub in_flight: u64,
    /// Calls waiting for a scheduled retry.
    pub scheduled_retries: u64,
    /// Dead letters.
    pub dead: u64,
    /// Notify calls delivered since the accounts were first seen.
    pub delivered: u64,
    /// Upstream 429 answers since the accounts were first seen.
    pub upstream_429: u64,
    /// Accounts paused by an operator.
    pub paused: u64,
    /// Accounts held because upstream refused their credentials.
    pub auth_failed: u64,
    /// Age of the oldest undelivered event of any account, in seconds.
    pub oldest_age_seconds: Option<f64>,
}

/// `GET /v1/queues`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuesView {
    /// The storage's clock (RFC 3339).
    pub now: String,
    /// The accounts of this page (every matching account without `limit`).
    pub accounts: Vec<QueueView>,
    /// Accounts matching `q`.
    pub total: u64,
    /// Offset of this page.
    pub offset: u64,
    /// Offset of the next page, if any.
    pub next_offset: Option<u64>,
    /// Sums over every account the key reaches.
    pub totals: QueueTotals,
    /// Queue partitions that could not be read for this answer (their shard down, say):
    /// their accounts show what an earlier read found, or are missing if none did.
    pub unread_partitions: Vec<u16>,
}

/// The order of `GET /v1/queues`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueSort {
    /// By account id.
    #[default]
    Account,
    /// What needs an operator first: `auth_failed`, paused with work, dead letters,
    /// `rate_limited`, work waiting, then the rest; within each, the oldest event first,
    /// then the deepest queue.
    Attention,
    /// Deepest queue first.
    Depth,
    /// Oldest undelivered event first.
    Oldest,
    /// Most dead letters first.
    Dead,
}

/// Filtering, order and paging of `GET /v1/queues`; without any, every account by id.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueuesQuery {
    /// Accounts to skip (after filtering and sorting).
    #[param(minimum = 0, maximum = 1_000_000_000_000_u64)]
    pub offset: Option<u64>,
    /// Accounts per page (1-1000); every matching account when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// The order (default `account`).
    #[param(inline)]
    pub sort: Option<QueueSort>,
    /// Only accounts whose id contains this text (case-insensitive).
    #[param(max_length = 64)]
    pub q: Option<String>,
}

/// Margin beyond which a wait with room in the window is an upstream pause.
const UPSTREAM_PAUSE_MIN_MS: u64 = 1000;

fn state_of(a: &AccountStats, now: u64, limit: Option<u32>) -> &'static str {
    let waiting = a
        .next_send_ms
        .is_some_and(|next| next > now + UPSTREAM_PAUSE_MIN_MS);
    let window_full = limit.is_some_and(|l| a.sent_in_window >= u64::from(l));
    if a.auth_failed {
        "auth_failed"
    } else if a.paused {
        "paused"
    } else if waiting && !window_full {
        "rate_limited"
    } else if a.depth > 0 && window_full && a.next_send_ms.is_some_and(|n| n > now) {
        "window_full"
    } else if a.depth > 0 {
        "sending"
    } else {
        "idle"
    }
}

/// Lower is more urgent (see [`QueueSort::Attention`]).
fn attention_rank(a: &AccountStats, now: u64) -> u8 {
    if a.auth_failed {
        0
    } else if a.paused && a.depth > 0 {
        1
    } else if a.dead > 0 {
        2
    } else if a
        .next_send_ms
        .is_some_and(|n| n > now + UPSTREAM_PAUSE_MIN_MS)
    {
        3
    } else if a.depth > 0 {
        4
    } else if a.paused {
        5
    } else {
        6
    }
}

fn sort_rows(rows: &mut [AccountStats], sort: QueueSort, now: u64) {
    use std::cmp::Reverse;
    // An account without an oldest event sorts after every account with one.
    let oldest = |a: &AccountStats| a.oldest_ms.unwrap_or(u64::MAX);
    match sort {
        QueueSort::Account => rows.sort_by(|a, b| a.account.cmp(&b.account)),
        QueueSort::Attention => rows.sort_by(|a, b| {
            (
                attention_rank(a, now),
                oldest(a),
                Reverse(a.depth),
                Reverse(a.dead),
            )
                .cmp(&(
                    attention_rank(b, now),
                    oldest(b),
                    Reverse(b.depth),
                    Reverse(b.dead),
                ))
                .then_with(|| a.account.cmp(&b.account))
        }),
        QueueSort::Depth => rows.sort_by(|a, b| {
            b.depth
                .cmp(&a.depth)
                .then_with(|| a.account.cmp(&b.account))
        }),
        QueueSort::Oldest => rows.sort_by(|a, b| {
            oldest(a)
                .cmp(&oldest(b))
                .then_with(|| a.account.cmp(&b.account))
        }),
        QueueSort::Dead => {
            rows.sort_by(|a, b| b.dead.cmp(&a.dead).then_with(|| a.account.cmp(&b.account)))
        }
    }
}

/// Per account: depth, in flight, scheduled retries, dead letters, oldest age, sends in
/// the current window against the account's limit, holds and next send time; with totals.
/// `q`, `sort`, `offset` and `limit` filter, order and page the accounts on the server, so
/// the dashboard stays fast with many accounts.
#[utoipa::path(get, path = "/v1/queues", tag = "admin",
    security(("bearer" = [])),
    params(QueuesQuery),
    responses(
        (status = 200, description = "The accounts' queues", body = QueuesView),
        (status = 400, description = "Bad query", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn queues(
    State(state): State<AppState>,
    admin: Admin,
    query: Result<Query<QueuesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let offset = query.offset.unwrap_or(0);
    check_queues_query(&query, offset)?;
    let stats = state.queue().stats().await?;
    let now = stats.now_ms;
    let unread_partitions = stats.unread_partitions;
    let mut rows = every_account(
        &state,
        stats.accounts,
        !unread_partitions.is_empty(),
        &stats.never_read_partitions,
    )
    .await?;
    rows.retain(|r| admin.0.reaches(&r.account));
    let totals = totals_of(&rows, now);
    if let Some(q) = query.q.as_deref().map(str::to_ascii_lowercase) {
        rows.retain(|r| r.account.to_ascii_lowercase().contains(&q));
    }
    sort_rows(&mut rows, query.sort.unwrap_or_default(), now);
    let total = rows.len() as u64;
    let page: Vec<AccountStats> = rows
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(query.limit.map_or(usize::MAX, |l| l as usize))
        .collect();
    let next = offset + page.len() as u64;
    let accounts = views_of(&state, page, now).await?;
    Ok(Json(QueuesView {
        now: rfc3339_ms(now),
        accounts,
        total,
        offset,
        next_offset: (next < total).then_some(next),
        totals,
        unread_partitions,
    })
    .into_response())
}

/// 400 for a page out of bounds or a search of more than 64 characters.
fn check_queues_query(query: &QueuesQuery, offset: u64) -> Result<(), ApiError> {
    if query.limit.is_some_and(|l| !(1..=MAX_PAGE).contains(&l))
        || offset > MAX_OFFSET
        || query.q.as_ref().is_some_and(|q| q.chars().count() > 64)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadQuery,
            format!(
                "limit must be between 1 and {MAX_PAGE}, offset at most {MAX_OFFSET}, q at most 64 characters"
            ),
        ));
    }
    Ok(())
}

/// The stored accounts' rows, with an empty row for each configured or registered account
/// the store holds nothing of, except in the partitions this process never read
/// (`never_read`): nothing is known of those accounts, so they are left out rather than
/// shown idle. `degraded`: some partition could not be read for these rows.
async fn every_account(
    state: &AppState,
    mut rows: Vec<AccountStats>,
    degraded: bool,
    never_read: &[u16],
) -> Result<Vec<AccountStats>, ApiError> {
    let mut known: Vec<String> = state.accounts().iter().map(|a| a.id.clone()).collect();
    if state.directory().runtime_enabled() {
        match state.queue().list_accounts().await {
            Ok(listed) => known.extend(listed.into_iter().map(|(id, _)| id)),
            // Part of the store is down already (and named in the answer): the accounts
            // registered at runtime that hold nothing yet are left out.
            Err(e @ QueueError::Unavailable(_)) if degraded => {
                tracing::warn!(error = %e, "cannot list the runtime accounts; leaving out those without queue records");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let partitions = state.queue().partitions();
    let present: std::collections::HashSet<String> =
        rows.iter().map(|r| r.account.clone()).collect();
    for id in known {
        if !present.contains(&id) && !never_read.contains(&partition_of(&id, partitions)) {
            rows.push(AccountStats {
                account: id,
                ..Default::default()
            });
        }
    }
    Ok(rows)
}

/// Age in seconds at `now` of a time in milliseconds.
fn age_at(now: u64, oldest: Option<u64>) -> Option<f64> {
    oldest.map(|o| now.saturating_sub(o) as f64 / 1000.0)
}

/// Sums over `rows`.
fn totals_of(rows: &[AccountStats], now: u64) -> QueueTotals {
    let mut totals = QueueTotals::default();
    for a in rows {
        totals.accounts += 1;
        totals.depth += a.depth;
        totals.in_flight += a.in_flight;
        totals.scheduled_retries += a.scheduled_retries;
        totals.dead += a.dead;
        totals.delivered += a.delivered;
        totals.upstream_429 += a.upstream_429;
        totals.paused += u64::from(a.paused);
        totals.auth_failed += u64::from(a.auth_failed);
    }
    totals.oldest_age_seconds = age_at(now, rows.iter().filter_map(|a| a.oldest_ms).min());
    totals
}

/// The views of a page of rows, each with its account's limit.
async fn views_of(
    state: &AppState,
    page: Vec<AccountStats>,
    now: u64,
) -> Result<Vec<QueueView>, ApiError> {
    // The limit lives in each account's settings: read for this page's accounts only, a few
    // at a time (a runtime account's may be a Redis read), and a failed read fails the page
    // rather than show the account without its limit.
    let directory = state.directory();
    let ids: Vec<String> = page.iter().map(|a| a.account.clone()).collect();
    let limits: Vec<Option<RateLimit>> = futures::stream::iter(ids)
        .map(|id| async move { directory.resolve(&id).await })
        .buffered(32)
        .map(|r| r.map(|acct| acct.map(|acct| acct.limit)))
        .try_collect()
        .await?;
    Ok(page
        .into_iter()
        .zip(limits)
        .map(|(a, limit)| QueueView {
            state: state_of(&a, now, limit.map(|l| l.limit)),
            oldest_age_seconds: age_at(now, a.oldest_ms),
            next_send_at: a.next_send_ms.map(|ms| rfc3339_ms(ms.max(now))),
            limit: limit.map(|l| l.limit),
            window_seconds: limit.map(|l| l.window_ms as f64 / 1000.0),
            account: a.account,
            depth: a.depth,
            in_flight: a.in_flight,
            scheduled_retries: a.scheduled_retries,
            dead: a.dead,
            sent_in_window: a.sent_in_window,
            delivered: a.delivered,
            upstream_429: a.upstream_429,
            paused: a.paused,
            auth_failed: a.auth_failed,
        })
        .collect())
}

/// Which history `GET /v1/history` returns.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// An account whose history to add to the total.
    pub account: Option<String>,
}

/// Queue depth, dead letters and delivery rate over the last `CAPACITY` points (360 at
/// `metrics.history_interval_seconds`: an hour at the default 10 s), in total and for one account, as sampled by this
/// process since its start. Every process samples the same shared counters, so all show
/// the same values; the total is given to keys that reach every account.
#[utoipa::path(get, path = "/v1/history", tag = "admin",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "The history", body = crate::history::HistoryView),
        (status = 400, description = "Bad query", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
    ))]
pub async fn history(
    State(state): State<AppState>,
    admin: Admin,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let client = &admin.0;
    let Query(query) = query.map_err(bad_query)?;
    if let Some(account) = &query.account {
        admin.existing(&state, account).await?;
    }
    let view = state
        .history()
        .view(client.reaches_all(), query.account.as_deref());
    Ok(Json(view).into_response())
}

/// The gateway processes sharing the store, as `GET /v1/cluster` lists them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// The store layout this process reads and writes.
    pub layout: u32,
    /// The live processes (a heartbeat in the last 20 s), oldest first, with their
    /// release and layout; during a rolling deploy, old and new side by side.
    #[schema(value_type = Vec<Object>)]
    pub processes: Vec<crate::queue::ProcessRecord>,
}

/// The live gateway processes sharing the store, with their release and layout.
#[utoipa::path(get, path = "/v1/cluster", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The processes", body = ClusterView),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key reaching every account", body = crate::error::ErrorBody),
        (status = 503, description = "Queue storage unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn cluster(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let client = &admin.0;
    if !client.reaches_all() {
        return Err(forbidden(
            "the process list is for admin keys that reach every account",
        ));
    }
    let processes = state.queue().processes().await?;
    Ok(Json(ClusterView {
        layout: crate::queue::layout::LAYOUT_VERSION,
        processes,
    })
    .into_response())
}

/// Paging of dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Letters to skip (oldest first).
    #[param(minimum = 0, maximum = 1_000_000_000_000_u64)]
    pub offset: Option<u64>,
    /// Letters per page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersView {
    /// The account.
    pub account: String,
    /// Dead letters in all.
    pub total: u64,
    /// Offset of this page.
    pub offset: u64,
    /// Offset of the next page, if any.
    pub next_offset: Option<u64>,
    /// The letters, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<crate::queue::DeadLetter>,
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text())
}

/// The account's dead letters with reason, status, attempts, last error and the event,
/// oldest first.
#[utoipa::path(get, path = "/v1/accounts/{account}/dead-letters", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id"), PageQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLettersView),
        (status = 400, description = "Bad paging", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
    ))]
pub async fn dead_letters(
    State(state): State<AppState>,
    AdminAccount(account): AdminAccount,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(page) = query.map_err(bad_query)?;
    let offset = page.offset.unwrap_or(0);
    let limit = page.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) || offset > MAX_OFFSET {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadQuery,
            format!("limit must be between 1 and {MAX_PAGE}, offset at most {MAX_OFFSET}"),
        ));
    }
    let page = state.queue().dead_letters(&account, offset, limit).await?;
    let next = offset + page.items.len() as u64;
    Ok(Json(DeadLettersView {
        account,
        total: page.total,
        offset,
        next_offset: (next < page.total && !page.items.is_empty()).then_some(next),
        items: page.items,
    })
    .into_response())
}

/// What to replay: `{"ids": [...]}` or, with no body, `{}` or `{"all": true}`, every
/// dead letter.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectionBody {
    /// Delivery ids (`{event id}:{index}`) as listed.
    #[schema(max_items = 10000)]
    pub ids: Option<Vec<String>>,
    /// Every dead letter of the account (the default when `ids` is absent).
    pub all: Option<bool>,
}

async fn selection(headers: &HeaderMap, body: Body) -> Result<DeadLetterSelection, ApiError> {
    let bytes = read_body(headers, body, MAX_ADMIN_BODY).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeadLetterSelection::All);
    }
    require_json(headers)?;
    let body: SelectionBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("expected {{\"ids\": [...]}} or {{\"all\": true}}: {e}"),
        )
    })?;
    match (body.ids, body.all) {
        (Some(_), Some(true)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadSelection,
            "give either ids or all, not both",
        )),
        (Some(ids), _) if ids.len() > 10_000 => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadSelection,
            "at most 10000 ids per call",
        )),
        (Some(ids), _) => Ok(DeadLetterSelection::Ids(ids)),
        (None, Some(false)) => Ok(DeadLetterSelection::Ids(Vec::new())),
        (None, _) => Ok(DeadLetterSelection::All),
    }
}

/// The result of a replay or purge.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterActionView {
    /// The account.
    pub account: String,
    /// Letters replayed or purged.
    pub count: u64,
    /// Requested ids that were not dead letters of the account.
    pub not_found: Vec<String>,
}

/// Puts dead letters back in the queue with attempts reset (all, or the given ids).
#[utoipa::path(post, path = "/v1/accounts/{account}/dead-letters/replay", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id")),
    request_body(content = Option<SelectionBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "Replayed", body = DeadLetterActionView),
        (status = 400, description = "Bad selection", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
        (status = 413, description = "Body too large", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::error::ErrorBody),
    ))]
pub async fn replay(
    State(state): State<AppState>,
    AdminAccount(account): AdminAccount,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let selection = selection(&headers, body).await?;
    let ttl = std::time::Duration::from_secs(state.config().delivery.default_ttl_seconds);
    let result = state.queue().replay(&account, &selection, ttl).await?;
    if result.count > 0 {
        state.wake_worker();
    }
    tracing::info!(account = %account, replayed = result.count, "dead letters replayed");
    Ok(Json(DeadLetterActionView {
        account,
        count: result.count,
        not_found: result.not_found,
    })
    .into_response())
}

/// Which dead letters to purge.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeQuery {
    /// Comma-separated delivery ids; every dead letter when absent.
    pub ids: Option<String>,
}

/// Forgets dead letters (all, or `?ids=a,b`).
#[utoipa::path(delete, path = "/v1/accounts/{account}/dead-letters", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id"), PurgeQuery),
    responses(
        (status = 200, description = "Purged", body = DeadLetterActionView),
        (status = 400, description = "Bad query", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
    ))]
pub async fn purge(
    State(state): State<AppState>,
    AdminAccount(account): AdminAccount,
    query: Result<Query<PurgeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let selection = match query.ids {
        None => DeadLetterSelection::All,
        Some(ids) => DeadLetterSelection::Ids(
            ids.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .take(10_000)
                .map(String::from)
                .collect(),
        ),
    };
    let result = state.queue().purge_dead(&account, &selection).await?;
    tracing::info!(account = %account, purged = result.count, "dead letters purged");
    Ok(Json(DeadLetterActionView {
        account,
        count: result.count,
        not_found: result.not_found,
    })
    .into_response())
}

/// Whether an account's delivery is held.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    /// The account.
    pub account: String,
    /// Held by an operator.
    pub paused: bool,
}

/// Holds delivery of the account; ingress keeps accepting.
#[utoipa::path(post, path = "/v1/accounts/{account}/pause", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Paused", body = HoldView),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    AdminAccount(account): AdminAccount,
) -> Result<Response, ApiError> {
    state.queue().pause(&account).await?;
    tracing::info!(account = %account, "account paused");
    Ok(Json(HoldView {
        account,
        paused: true,
    })
    .into_response())
}

/// Releases delivery of the account (clears `paused` and `auth_failed`).
#[utoipa::path(post, path = "/v1/accounts/{account}/resume", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Resumed", body = HoldView),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    AdminAccount(account): AdminAccount,
) -> Result<Response, ApiError> {
    state.queue().resume(&account).await?;
    state.wake_worker();
    tracing::info!(account = %account, "account resumed");
    Ok(Json(HoldView {
        account,
        paused: false,
    })
    .into_response())
}

fn store_error(e: AccountStoreError) -> ApiError {
    match e {
        AccountStoreError::Disabled => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RuntimeAccountsDisabled,
            e.to_string(),
        ),
        AccountStoreError::Configured(_) => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ConfiguredAccount,
            e.to_string(),
        ),
        AccountStoreError::Invalid(field, message) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidAccount,
            format!("{field}: {message}"),
        )
        .with_details(vec![
            json!({"pointer": format!("/{field}"), "message": message}),
        ]),
        AccountStoreError::Queue(q) => q.into(),
    }
}

/// Registers or replaces a runtime account; its credentials are stored encrypted and
/// never returned.
#[utoipa::path(put, path = "/v1/accounts/{account}", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id")),
    request_body(content = AccountSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = AccountInfo),
        (status = 200, description = "Replaced", body = AccountInfo),
        (status = 400, description = "Malformed JSON or bad id", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 409, description = "A configured account, or runtime accounts disabled", body = crate::error::ErrorBody),
        (status = 413, description = "Body too large", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid account", body = crate::error::ErrorBody),
    ))]
pub async fn put_account(
    State(state): State<AppState>,
    AdminTarget(account): AdminTarget,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !valid_name(&account) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadAccountId,
            "an account id is 1-64 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    require_json(&headers)?;
    let bytes = read_body(&headers, body, MAX_ADMIN_BODY).await?;
    let spec: AccountSpec = serde_json::from_slice(&bytes).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(
            status,
            ErrorCode::InvalidAccount,
            format!("bad account: {e}"),
        )
    })?;
    let created = state
        .directory()
        .put(&account, &spec)
        .await
        .map_err(store_error)?;
    tracing::info!(account = %account, created, "runtime account stored");
    let info = state
        .directory()
        .info(&account)
        .await?
        .ok_or_else(|| unregistered_account(&account))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)).into_response())
}

/// An account's settings (configured or runtime), never its credentials.
#[utoipa::path(get, path = "/v1/accounts/{account}", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = AccountInfo),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
    ))]
pub async fn get_account(
    State(state): State<AppState>,
    AdminTarget(account): AdminTarget,
) -> Result<Response, ApiError> {
    if !valid_name(&account) {
        return Err(unregistered_account(&account));
    }
    let info = state
        .directory()
        .info(&account)
        .await?
        .ok_or_else(|| unregistered_account(&account))?;
    Ok(Json(info).into_response())
}

/// Deletes a runtime account. Its queued events stay: they are delivered if the account
/// is registered again in time, else retried and dead-lettered like any failed call.
#[utoipa::path(delete, path = "/v1/accounts/{account}", tag = "admin",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
        (status = 409, description = "A configured account, or runtime accounts disabled", body = crate::error::ErrorBody),
    ))]
pub async fn delete_account(
    State(state): State<AppState>,
    AdminTarget(account): AdminTarget,
) -> Result<Response, ApiError> {
    if !valid_name(&account) {
        return Err(unregistered_account(&account));
    }
    match state.directory().delete(&account).await {
        Ok(true) => {
            tracing::info!(account = %account, "runtime account deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(false) => Err(unregistered_account(&account)),
        Err(e) => Err(store_error(e)),
    }
}

/// Prometheus metrics (text format 0.0.4). Open to any caller, like `/healthz`: it holds
/// counts, never payloads or credentials.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text", body = String, content_type = "text/plain"),
    ))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = match state.metrics().queue_stats(state.queue().as_ref()).await {
        Ok(stats) => Some(stats),
        Err(e) => {
            tracing::warn!(error = %e, "queue gauges unavailable for this scrape");
            None
        }
    };
    let text = state.metrics().render(stats.as_deref());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> AccountStats {
        AccountStats {
            account: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn states_name_the_most_urgent_hold_first() {
        let now = 100_000;
        let mut a = account("a");
        assert_eq!(state_of(&a, now, Some(5)), "idle");
        a.depth = 3;
        assert_eq!(state_of(&a, now, Some(5)), "sending");
        a.sent_in_window = 5;
        a.next_send_ms = Some(now + 20_000);
        assert_eq!(state_of(&a, now, Some(5)), "window_full");
        a.sent_in_window = 1;
        assert_eq!(state_of(&a, now, Some(5)), "rate_limited");
        // A wait within the window's margin is not an upstream pause.
        a.next_send_ms = Some(now + 200);
        assert_eq!(state_of(&a, now, Some(5)), "sending");
        a.paused = true;
        assert_eq!(state_of(&a, now, Some(5)), "paused");
        a.auth_failed = true;
        assert_eq!(state_of(&a, now, None), "auth_failed");
    }

    #[test]
    fn attention_puts_holds_and_dead_letters_before_backlogs() {
        let now = 100_000;
        let mut rows = vec![account("idle"), account("old"), account("young")];
        rows[1].depth = 1;
        rows[1].oldest_ms = Some(1_000);
        rows[2].depth = 50;
        rows[2].oldest_ms = Some(90_000);
        let mut dead = account("dead");
        dead.dead = 1;
        let mut held = account("held");
        held.paused = true;
        held.depth = 1;
        let mut refused = account("refused");
        refused.auth_failed = true;
        let mut limited = account("limited");
        limited.depth = 1;
        limited.next_send_ms = Some(now + 30_000);
        rows.extend([dead, held, refused, limited]);
        sort_rows(&mut rows, QueueSort::Attention, now);
        let order: Vec<&str> = rows.iter().map(|r| r.account.as_str()).collect();
        assert_eq!(
            order,
            ["refused", "held", "dead", "limited", "old", "young", "idle"]
        );
        sort_rows(&mut rows, QueueSort::Depth, now);
        assert_eq!(rows[0].account, "young");
        sort_rows(&mut rows, QueueSort::Oldest, now);
        assert_eq!(rows[0].account, "old");
    }

    #[test]
    fn ten_thousand_accounts_sort_quickly() {
        let mut rows: Vec<AccountStats> = (0..10_000)
            .map(|i| AccountStats {
                account: format!("acct-{i:05}"),
                depth: (i * 7919) % 1000,
                oldest_ms: Some((i * 104_729) % 1_000_000),
                dead: u64::from(i % 97 == 0),
                ..Default::default()
            })
            .collect();
        let started = std::time::Instant::now();
        sort_rows(&mut rows, QueueSort::Attention, 2_000_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(rows[0].dead > 0);
    }
}
