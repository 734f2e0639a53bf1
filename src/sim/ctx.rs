//! What an endpoint knows about its request: the caller, the family, the body, the URL the
//! client used, and the account's state (with its due jobs finished).

use std::time::Instant;

use axum::http::request::Parts;
use bytes::Bytes;

use super::auth::Caller;
use super::errors::ApiError;
use super::progress;
use super::routes::Family;
use super::state::{AccountState, Ids, Store};

/// What an endpoint needs to know about its request.
pub(crate) struct Ctx<'a> {
    pub store: &'a Store,
    pub family: Family,
    pub caller: Option<Caller>,
    pub parts: &'a Parts,
    pub body: Bytes,
    /// `http(s)://host` as the client addressed the simulator.
    pub base_url: String,
}

impl Ctx<'_> {
    /// The value of a query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        let q = self.parts.uri.query()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.replace("%2C", ",").replace("%2c", ","))
        })
    }

    /// The caller's account, for endpoints that need credentials.
    pub(crate) fn account(&self) -> Result<&str, ApiError> {
        self.caller
            .as_ref()
            .map(|c| c.account.as_str())
            .ok_or(ApiError::Unauthorized)
    }

    /// Runs `f` on the caller's account under the state lock, after finishing the jobs that
    /// are due.
    pub(crate) fn with_account<T>(
        &self,
        f: impl FnOnce(&mut AccountState, &mut Ids) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let name = self.account()?;
        let mut state = self.store.lock();
        let state = &mut *state;
        let account = state.accounts.get_mut(name).ok_or(ApiError::NotFound)?;
        progress::advance(account, &mut state.ids, Instant::now());
        f(account, &mut state.ids)
    }
}
