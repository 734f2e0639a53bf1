//! [`Config::validate`]: the cross-field checks, one step per concern, and the building of
//! the values the runtime takes from the config (webhook keys and schemas, the sealer, the
//! TLS material), so that nothing is read or decoded again after it.

use super::error::ConfigError;
use super::load::Config;
use super::{accounts, clients, webhooks};

impl Config {
    /// Checks every table, in a fixed order, and builds the runtime values: the listener's
    /// TLS material ([`super::ServerConfig::loaded_tls`]), the runtime accounts' sealer
    /// ([`super::RuntimeAccountsConfig::sealer`]) and each webhook's decoded secrets and
    /// compiled schema ([`super::WebhookConfig::parts`]). The first problem found is
    /// returned, naming its key.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.server.check_listener()?;
        self.redis.check()?;
        self.delivery.check()?;
        self.server.load_tls()?;
        self.proxy.check()?;
        let ids = accounts::check_accounts(&self.accounts)?;
        clients::check_clients(&self.clients, &ids)?;
        self.proxy.check_default_account(&ids)?;
        self.runtime_accounts.build_sealer()?;
        self.metrics.check()?;
        self.throttle.check()?;
        let runtime_accounts = self.runtime_accounts.encryption_key.is_some();
        webhooks::build_webhooks(&mut self.webhooks, &ids, runtime_accounts)?;
        self.check_sim()
    }

    /// The simulator's table, checked by the simulator's own rules; its messages start with
    /// the key they concern.
    #[cfg(feature = "sim")]
    fn check_sim(&self) -> Result<(), ConfigError> {
        let Some(sim) = &self.sim else {
            return Ok(());
        };
        sim.validate()
            .map_err(|e| ConfigError::invalid(e.key, e.message))
    }

    /// Without the simulator, there is no `[sim]` to check.
    #[cfg(not(feature = "sim"))]
    fn check_sim(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
