//! Settings the server refuses before binding anything: those that could only fail later, or
//! make it panic (a time too long to add to the clock, more permits than a semaphore holds).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{ServerConfig, ServiceKind};
use crate::chat::confirm::MIN_BUDGET;

/// The longest any time setting may be: 100 years, far longer than any wait that means
/// something, and far from the clock's own limit.
pub const MAX_TIME: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A setting [`Server::bind`](crate::Server::bind) refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A time longer than [`MAX_TIME`].
    #[error("{setting} must be at most {} seconds (100 years), not {} seconds", MAX_TIME.as_secs(), .value.as_secs_f64())]
    TimeTooLong {
        /// Which setting, with its `serve` flag.
        setting: &'static str,
        /// What it was set to.
        value: Duration,
    },
    /// A count larger than the server can keep track of.
    #[error("{setting} must be at most {max}, not {value}")]
    TooMany {
        /// Which setting, with its `serve` flag.
        setting: &'static str,
        /// What it was set to.
        value: usize,
        /// The most it may be.
        max: usize,
    },
    /// A rate that is zero, negative, infinite or not a number.
    #[error("{setting} must be a positive number, not {value}")]
    NotPositive {
        /// Which setting, with its `serve` flag.
        setting: &'static str,
        /// What it was set to.
        value: f64,
    },
    /// A memory budget that cannot hold what it must: one source's share smaller than the
    /// largest body in memory, or the whole budget smaller than one source's share.
    #[error("{setting} must be at least {min} bytes (to hold {what}), not {value}")]
    BudgetTooSmall {
        /// Which setting, with its `serve` flag.
        setting: &'static str,
        /// What it was set to.
        value: u64,
        /// The least it may be.
        min: u64,
        /// What it must hold, in words.
        what: &'static str,
    },
    /// A budget too small for what must fit in it.
    #[error("{setting} must be at least {min}, not {value}")]
    TooFew {
        /// Which setting, with its `serve` flag.
        setting: &'static str,
        /// What it was set to.
        value: usize,
        /// The least it may be.
        min: usize,
    },
    /// A second chat room listener: a server has one set of rooms, one operator console.
    #[error("one chat room per server; a second one is declared on {0}")]
    SecondChatRoom(SocketAddr),
}

impl ServerConfig {
    /// Checks every setting that [`Server::bind`](crate::Server::bind) would otherwise accept
    /// and fail on later.
    ///
    /// # Errors
    ///
    /// The first setting out of range, as a [`ConfigError`].
    pub fn check(&self) -> Result<(), ConfigError> {
        // Times that are added to the clock's present.
        for (setting, value) in [
            ("header_timeout (--header-timeout)", self.header_timeout),
            ("idle_timeout (--idle-timeout)", self.idle_timeout),
            ("exec.max_timeout (--exec-timeout)", self.exec.max_timeout),
            ("login.grace (--login-grace)", self.login.grace),
            ("transfers.wait (--queue-timeout)", self.transfers.wait),
            (
                "transfers.rate_window (--transfer-rate-window)",
                self.transfers.rate_window,
            ),
            ("memory.wait (--queue-timeout)", self.memory.wait),
            (
                "http.session_ttl (--http-session-ttl)",
                self.http.session_ttl,
            ),
            (
                "login.penalties.max (--login-backoff-max)",
                self.login.penalties.max,
            ),
        ] {
            if value > MAX_TIME {
                return Err(ConfigError::TimeTooLong { setting, value });
            }
        }
        // Counts that become semaphore permits.
        for (setting, value) in [
            ("max_conns (--max-conns)", self.max_conns),
            (
                "exec.max_running (--exec-max-running)",
                self.exec.max_running,
            ),
            (
                "transfers.max_running (--max-transfers)",
                self.transfers.max_running,
            ),
            (
                "memory.budget (--memory-budget), in KiB",
                usize::try_from(self.memory.budget.div_ceil(1024)).unwrap_or(usize::MAX),
            ),
        ] {
            if value > Semaphore::MAX_PERMITS {
                let max = Semaphore::MAX_PERMITS;
                return Err(ConfigError::TooMany {
                    setting,
                    value,
                    max,
                });
            }
        }
        for (setting, value) in [
            ("chat.rate (--chat-rate)", self.chat.rate),
            ("chat.burst", self.chat.burst),
            ("chat.join_rate", self.chat.join_rate),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::NotPositive { setting, value });
            }
        }
        self.check_memory()?;
        // An unproven chat member must be able to receive the ask to confirm.
        for (setting, value) in [
            (
                "chat.unconfirmed_bytes (--chat-unconfirmed-bytes)",
                self.chat.unconfirmed_bytes,
            ),
            (
                "chat.unconfirmed_rate (--chat-unconfirmed-rate)",
                self.chat.unconfirmed_rate,
            ),
        ] {
            if value < MIN_BUDGET {
                let min = MIN_BUDGET;
                return Err(ConfigError::TooFew {
                    setting,
                    value,
                    min,
                });
            }
        }
        for (setting, value) in [
            (
                "udp_echo.source_rate (--udp-echo-source-rate)",
                self.udp_echo.source_rate,
            ),
            ("udp_echo.rate (--udp-echo-rate)", self.udp_echo.rate),
            (
                "udp_echo.max_sources (--udp-echo-max-sources)",
                self.udp_echo.max_sources as u64,
            ),
        ] {
            if value == 0 {
                let value = 0.0;
                return Err(ConfigError::NotPositive { setting, value });
            }
        }
        let mut rooms = self
            .listeners
            .iter()
            .filter(|spec| spec.service == ServiceKind::Chat);
        if let (Some(_), Some(second)) = (rooms.next(), rooms.next()) {
            return Err(ConfigError::SecondChatRoom(second.addr));
        }
        self.check_bus()
    }
}

impl ServerConfig {
    /// The bus's times fit the clock, its presence is refreshed at least every millisecond
    /// and its queues hold a line.
    fn check_bus(&self) -> Result<(), ConfigError> {
        let Some(bus) = &self.bus else {
            return Ok(());
        };
        for (setting, value) in [
            (
                "bus.presence_ttl (--bus-presence-ttl)",
                bus.settings.presence_ttl,
            ),
            ("bus.timeout (--bus-timeout)", bus.settings.timeout),
        ] {
            if value > MAX_TIME {
                return Err(ConfigError::TimeTooLong { setting, value });
            }
            if value < MIN_BUS_TIME {
                let value = value.as_secs_f64();
                return Err(ConfigError::NotPositive { setting, value });
            }
        }
        if bus.settings.backlog == 0 {
            let (setting, value) = ("bus.backlog (--bus-backlog)", 0.0);
            return Err(ConfigError::NotPositive { setting, value });
        }
        Ok(())
    }
}

/// The shortest presence TTL or bus timeout: a third of it must still be a time.
const MIN_BUS_TIME: Duration = Duration::from_millis(3);

impl ServerConfig {
    /// One source's share of the memory budget holds the largest body in memory, and the
    /// budget holds one share.
    fn check_memory(&self) -> Result<(), ConfigError> {
        let body = self.limits.max_buffered_body();
        if self.memory.per_source < body {
            return Err(ConfigError::BudgetTooSmall {
                setting: "memory.per_source (--memory-budget-per-source)",
                value: self.memory.per_source,
                min: body,
                what: "the largest body in memory, --max-body-in-memory",
            });
        }
        if self.memory.budget < self.memory.per_source {
            return Err(ConfigError::BudgetTooSmall {
                setting: "memory.budget (--memory-budget)",
                value: self.memory.budget,
                min: self.memory.per_source,
                what: "one source's share, --memory-budget-per-source",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass() {
        assert_eq!(ServerConfig::default().check(), Ok(()));
        assert_eq!(ServerConfig::loopback().check(), Ok(()));
    }

    #[test]
    fn a_time_too_long_for_the_clock_is_refused() {
        let mut config = ServerConfig::loopback();
        config.idle_timeout = Duration::from_secs(u64::MAX);
        let err = config.check().unwrap_err();
        assert!(
            matches!(err, ConfigError::TimeTooLong { setting, .. } if setting.contains("--idle-timeout")),
            "{err}"
        );
        config.idle_timeout = MAX_TIME;
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn more_permits_than_a_semaphore_holds_are_refused() {
        let mut config = ServerConfig::loopback();
        config.max_conns = usize::MAX;
        assert!(matches!(
            config.check(),
            Err(ConfigError::TooMany {
                value: usize::MAX,
                ..
            })
        ));
    }

    #[test]
    fn a_chat_rate_must_be_positive() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut config = ServerConfig::loopback();
            config.chat.rate = rate;
            let err = config.check().unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("chat.rate (--chat-rate) must be a positive number"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_memory_budget_must_hold_the_largest_body_in_memory() {
        let mut config = ServerConfig::loopback();
        config.memory.per_source = config.limits.max_buffered_body() - 1;
        let err = config.check().unwrap_err();
        assert!(
            matches!(err, ConfigError::BudgetTooSmall { setting, .. } if setting.contains("--memory-budget-per-source")),
            "{err}"
        );
        config.memory.per_source = config.limits.max_buffered_body();
        config.memory.budget = config.memory.per_source - 1;
        let err = config.check().unwrap_err();
        assert!(
            matches!(err, ConfigError::BudgetTooSmall { setting, .. } if setting.starts_with("memory.budget (")),
            "{err}"
        );
        config.memory.budget = config.memory.per_source;
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn budgets_too_small_for_the_ask_or_an_echo_that_answers_nothing_are_refused() {
        let mut config = ServerConfig::loopback();
        config.chat.unconfirmed_bytes = 100;
        assert_eq!(
            config.check().unwrap_err().to_string(),
            "chat.unconfirmed_bytes (--chat-unconfirmed-bytes) must be at least 128, not 100"
        );
        let mut config = ServerConfig::loopback();
        config.chat.unconfirmed_rate = 0;
        assert!(matches!(
            config.check(),
            Err(ConfigError::TooFew { value: 0, .. })
        ));
        let mut config = ServerConfig::loopback();
        config.udp_echo.rate = 0;
        assert!(config
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("udp_echo.rate (--udp-echo-rate) must be a positive number"));
    }

    #[test]
    fn one_chat_room_per_server() {
        let mut config = ServerConfig::default();
        let second = "127.0.0.1:9001".parse().unwrap();
        config.add_listener(ServiceKind::Chat, second);
        assert_eq!(config.check(), Err(ConfigError::SecondChatRoom(second)));
    }
}
