//! The connection settings from the environment.
//!
//! | variable | meaning |
//! |---|---|
//! | `AMQP_URL` | broker URL(s); wins over `RABBITMQ_URL` when both are set |
//! | `RABBITMQ_URL` | the original amqp-dispatcher's variable, same syntax |
//! | `AMQP_HEARTBEAT` | heartbeat in seconds; wins over `RABBITMQ_HEARTBEAT` |
//! | `RABBITMQ_HEARTBEAT` | the original's override of the URL's `heartbeat` |
//!
//! With none set, the dispatcher connects to `amqp://guest:guest@localhost:5672/%2f`.

use amqp_client::ConnectionConfig;

use super::ConfigError;

const DEFAULT_URL: &str = "amqp://guest:guest@localhost:5672/%2f";

/// Connection settings and where they came from, for the startup log.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EnvConnection {
    /// The settings.
    pub config: ConnectionConfig,
    /// The variable the URL came from (`AMQP_URL`, `RABBITMQ_URL`), or `default`.
    pub url_from: &'static str,
    /// The variable the heartbeat came from, when one set it.
    pub heartbeat_from: Option<&'static str>,
}

impl EnvConnection {
    /// One line for the startup log: the URL with its password replaced, and its sources.
    pub fn describe(&self) -> String {
        let heartbeat = match self.heartbeat_from {
            Some(var) => format!(", heartbeat from {var}"),
            None => String::new(),
        };
        format!(
            "{} (from {}{heartbeat})",
            self.config.redacted_uri(),
            self.url_from
        )
    }
}

/// The connection settings from the environment (see the module docs).
///
/// # Errors
/// [`ConfigError::Env`] for a URL or heartbeat that cannot be used, naming the variable.
pub fn connection_from_env() -> Result<EnvConnection, ConfigError> {
    connection_from(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// As [`connection_from_env`], reading variables with `var`.
///
/// # Errors
/// As [`connection_from_env`].
pub fn connection_from(var: impl Fn(&str) -> Option<String>) -> Result<EnvConnection, ConfigError> {
    let (url, url_from) = ["AMQP_URL", "RABBITMQ_URL"]
        .into_iter()
        .find_map(|name| var(name).map(|url| (url, name)))
        .unwrap_or_else(|| (DEFAULT_URL.to_owned(), "default"));
    let heartbeat = ["AMQP_HEARTBEAT", "RABBITMQ_HEARTBEAT"]
        .into_iter()
        .find_map(|name| var(name).map(|value| (value, name)));
    let mut config = parse_url(&url, url_from)?;
    if url_from == "RABBITMQ_URL" {
        shared_port(&url, &mut config);
    }
    let mut env = EnvConnection {
        config,
        url_from,
        heartbeat_from: None,
    };
    if let Some((value, name)) = heartbeat {
        let seconds = value.trim().parse::<u16>().map_err(|e| ConfigError::Env {
            var: name,
            reason: e.to_string(),
        })?;
        env.config.heartbeat = Some(seconds);
        env.heartbeat_from = Some(name);
    }
    Ok(env)
}

/// The connection settings from `AMQP_URL` / `RABBITMQ_URL` and `AMQP_HEARTBEAT` /
/// `RABBITMQ_HEARTBEAT` (see [`connection_from_env`]).
///
/// # Errors
/// [`ConfigError::Env`] for a URL or heartbeat that cannot be used.
pub fn connection_config_from_env() -> Result<ConnectionConfig, ConfigError> {
    connection_from_env().map(|env| env.config)
}

/// Connection settings from a URL value and a heartbeat value (seconds), as if they were
/// `AMQP_URL` and `AMQP_HEARTBEAT`.
///
/// The URL may list several brokers, either as several URLs separated by commas
/// (`amqp://u:p@a/vh,amqp://u:p@b/vh`: credentials and vhost come from the first) or as one
/// URL with several hosts (`amqp://u:p@a,b:5673/vh`). The client tries them in random order.
///
/// # Errors
/// [`ConfigError::Env`] for a URL or heartbeat that cannot be used.
pub fn connection_config(
    url: &str,
    heartbeat: Option<&str>,
) -> Result<ConnectionConfig, ConfigError> {
    let (url, heartbeat) = (url.to_owned(), heartbeat.map(str::to_owned));
    connection_from(|name| match name {
        "AMQP_URL" => Some(url.clone()),
        "AMQP_HEARTBEAT" => heartbeat.clone().filter(|h| !h.trim().is_empty()),
        _ => None,
    })
    .map(|env| env.config)
}

fn parse_url(url: &str, var: &'static str) -> Result<ConnectionConfig, ConfigError> {
    let env = |e: &dyn std::fmt::Display| ConfigError::Env {
        var,
        reason: e.to_string(),
    };
    let mut parts = split_urls(url).into_iter();
    let first = parts.next().unwrap_or_default();
    let mut config = ConnectionConfig::from_uri(first).map_err(|e| env(&e))?;
    for part in parts {
        let other = ConnectionConfig::from_uri(part).map_err(|e| env(&e))?;
        config.endpoints.extend(other.endpoints);
    }
    Ok(config)
}

/// The original daemon reads `amqp://u:p@a,b:5673/vh` as hosts `a` and `b`, both on port
/// 5673 (the port after the last host applies to all): hosts written without a port get it.
fn shared_port(url: &str, config: &mut ConnectionConfig) {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let hosts = authority.split(['/', '?']).next().unwrap_or_default();
    let hosts: Vec<&str> = hosts.split(',').collect();
    let has_port = |host: &str| host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
    let (Some(last), Some(port)) = (hosts.last(), config.endpoints.last().map(|e| e.port)) else {
        return;
    };
    if hosts.len() != config.endpoints.len() || !has_port(last) {
        return;
    }
    for (host, endpoint) in hosts.iter().zip(config.endpoints.iter_mut()) {
        if !has_port(host) {
            endpoint.port = port;
        }
    }
}

/// Splits `url` at the commas that start another `amqp://` / `amqps://` URL.
fn split_urls(url: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in url.match_indices(',') {
        let rest = url[i + 1..].trim_start();
        if rest.starts_with("amqp://") || rest.starts_with("amqps://") {
            parts.push(url[start..i].trim());
            start = i + 1;
        }
    }
    parts.push(url[start..].trim());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let list = list.to_vec();
        move |name| {
            list.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn urls_and_heartbeat() {
        let config =
            connection_config("amqp://u:p@a:5672/vh, amqp://u:p@b:5673/vh", Some("15")).unwrap();
        let hosts: Vec<String> = config.endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["a:5672", "b:5673"]);
        assert_eq!(
            (config.virtual_host.as_str(), config.heartbeat),
            ("vh", Some(15))
        );
        let config = connection_config("amqp://u:p@a,b:5673/%2f", None).unwrap();
        assert_eq!(config.endpoints.len(), 2);
        let bad = connection_config("amqp://a", Some("soon")).unwrap_err();
        assert!(bad.to_string().starts_with("AMQP_HEARTBEAT: "), "{bad}");
        assert!(connection_config("http://a", None).is_err());
    }

    #[test]
    fn the_original_daemons_variables_are_read_and_ours_win() {
        let env = connection_from(vars(&[
            (
                "RABBITMQ_URL",
                "amqp://app:secret@r1,r2:5673/orders?heartbeat=30",
            ),
            ("RABBITMQ_HEARTBEAT", "7"),
        ]))
        .unwrap();
        let hosts: Vec<String> = env
            .config
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(hosts, ["r1:5673", "r2:5673"]);
        assert_eq!(env.config.virtual_host, "orders");
        assert_eq!(
            env.config.heartbeat,
            Some(7),
            "RABBITMQ_HEARTBEAT overrides the URL"
        );
        let line = env.describe();
        assert!(
            line.contains("from RABBITMQ_URL, heartbeat from RABBITMQ_HEARTBEAT"),
            "{line}"
        );
        assert!(!line.contains("secret"), "{line}");

        let both = connection_from(vars(&[
            ("RABBITMQ_URL", "amqp://a:b@old/%2f"),
            ("AMQP_URL", "amqp://a:b@new/%2f"),
        ]))
        .unwrap();
        assert_eq!(
            (both.config.endpoints[0].host.as_str(), both.url_from),
            ("new", "AMQP_URL")
        );
        let none = connection_from(vars(&[])).unwrap();
        assert_eq!(
            (none.url_from, none.config.endpoints[0].host.as_str()),
            ("default", "localhost")
        );
        let bad = connection_from(vars(&[("RABBITMQ_HEARTBEAT", "x")])).unwrap_err();
        assert!(bad.to_string().starts_with("RABBITMQ_HEARTBEAT: "), "{bad}");
    }
}
