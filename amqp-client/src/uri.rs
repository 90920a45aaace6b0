//! Parsing `amqp://` and `amqps://` URIs.
//!
//! The syntax is RabbitMQ's URI specification (<https://www.rabbitmq.com/docs/uri-spec>) and
//! the options are the query parameters RabbitMQ's Erlang client reads
//! (<https://www.rabbitmq.com/docs/uri-query-parameters>):
//!
//! ```text
//! amqp[s]://[user[:password]@]host[:port][,host[:port]...][/vhost][?key=value&...]
//! ```
//!
//! Where the specification leaves room, or where common clients agree on something else:
//!
//! - User name, password, host and vhost are percent-decoded and must be UTF-8 (the
//!   specification's example decodes `ho%61st` to `hoast`). A `%` not followed by two hex
//!   digits is kept as it is, as pika and the Java client do.
//! - An absent user name or password is `guest` (each on its own, as the Java client and lapin
//!   do), an absent or zero-length host is `localhost`, an absent port 5672 (`amqp`) or 5671
//!   (`amqps`).
//! - An absent *or empty* path (`amqp://host`, `amqp://host/`) is the vhost `/`, as in pika;
//!   the specification gives the empty vhost name for `amqp://host/`, which RabbitMQ cannot
//!   create anyway. `%2f` is `/`. A path with more segments is taken as it stands after the
//!   first `/`, as pika does, so kombu's `amqp://host//` is the vhost `/` too.
//! - Several hosts may be separated by commas, each with its own optional port; an empty one
//!   in such a list is an error. IPv6 literals are bracketed: `[::1]:5672`.
//! - Query keys are case-sensitive; values are percent-decoded (`+` is a plus sign, not a
//!   space). `auth_mechanism` may be repeated, as RabbitMQ documents, and the first one wins
//!   (this client does not negotiate among several); any other repeated option is an error.
//!   The fragment (`#...`) is ignored.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use amqp_wire::connection::Sasl;
use amqp_wire::frame::FRAME_MIN_SIZE;
use percent_encoding::percent_decode_str;
use rustls_pki_types::ServerName;

use crate::config::{DEFAULT_CONNECTION_TIMEOUT, TlsOptions};
use crate::error::ConfigError;

/// The IANA port for `amqp`.
pub(crate) const AMQP_PORT: u16 = 5672;
/// The IANA port for `amqps`.
pub(crate) const AMQPS_PORT: u16 = 5671;
/// The user name and password used when a URI names none.
pub(crate) const DEFAULT_USER: &str = "guest";
/// The host used when a URI names none.
pub(crate) const DEFAULT_HOST: &str = "localhost";

/// The longest vhost name `connection.open` can carry (a short string).
const MAX_VHOST_LEN: usize = 255;

/// One host of a URI, its port absent when the URI gave none (the scheme decides it later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostSpec {
    /// Percent-decoded; an IPv6 literal without its brackets.
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
}

/// Everything a URI says, absent parts filled with their defaults.
#[derive(Clone, Debug)]
pub(crate) struct ParsedUri {
    /// Never empty.
    pub(crate) hosts: Vec<HostSpec>,
    pub(crate) sasl: Sasl,
    pub(crate) virtual_host: String,
    pub(crate) heartbeat: Option<u16>,
    pub(crate) frame_max: u32,
    pub(crate) channel_max: u16,
    pub(crate) connection_timeout: Duration,
    pub(crate) connection_name: Option<String>,
    /// `Some` exactly for `amqps`.
    pub(crate) tls: Option<TlsOptions>,
}

/// The SASL mechanisms `auth_mechanism` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    Plain,
    AmqPlain,
    External,
}

/// The query options, as given.
#[derive(Debug, Default)]
struct Query {
    heartbeat: Option<u16>,
    frame_max: Option<u32>,
    channel_max: Option<u16>,
    connection_timeout: Option<Duration>,
    mechanism: Option<Mechanism>,
    connection_name: Option<String>,
}

/// Every option this client reads.
const OPTIONS: [&str; 11] = [
    "heartbeat",
    "frame_max",
    "channel_max",
    "connection_timeout",
    "auth_mechanism",
    "connection_name",
    "cacertfile",
    "certfile",
    "keyfile",
    "verify",
    "server_name_indication",
];

/// The options that only make sense with TLS.
const TLS_OPTIONS: [&str; 5] = [
    "cacertfile",
    "certfile",
    "keyfile",
    "verify",
    "server_name_indication",
];

/// Parses `uri` (see the module docs for the rules).
pub(crate) fn parse(uri: &str) -> Result<ParsedUri, ConfigError> {
    // Environment variables and files often carry a trailing newline.
    let uri = uri.trim();
    let (scheme, rest) = split_scheme(uri)?;
    let mut tls = match scheme {
        Scheme::Amqp => None,
        Scheme::Amqps => Some(TlsOptions::default()),
    };

    // RFC 3986 §3.2: the authority ends at the first '/', '?' or '#'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // A password with an unencoded '/', '?' or '#' cuts the authority inside the password,
    // which then reads as a bad port: never echo that text in the error.
    let redact_port = tail.contains('@');
    let (userinfo, host_list) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let hosts = parse_hosts(host_list, redact_port)?;
    let (username, password) = parse_userinfo(userinfo)?;

    let tail = tail
        .split_once('#')
        .map_or(tail, |(before, _fragment)| before);
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let virtual_host = parse_vhost(path)?;
    let query = parse_query(query, &mut tls)?;

    let sasl = match query.mechanism.unwrap_or(Mechanism::Plain) {
        Mechanism::Plain => Sasl::Plain { username, password },
        Mechanism::AmqPlain => Sasl::AmqPlain { username, password },
        Mechanism::External => Sasl::External,
    };
    Ok(ParsedUri {
        hosts,
        sasl,
        virtual_host,
        heartbeat: query.heartbeat,
        frame_max: query.frame_max.unwrap_or(0),
        channel_max: query.channel_max.unwrap_or(0),
        connection_timeout: query
            .connection_timeout
            .unwrap_or(DEFAULT_CONNECTION_TIMEOUT),
        connection_name: query.connection_name,
        tls,
    })
}

enum Scheme {
    Amqp,
    Amqps,
}

/// Splits off `amqp://` or `amqps://` (the scheme case-insensitively, RFC 3986 §3.1).
fn split_scheme(uri: &str) -> Result<(Scheme, &str), ConfigError> {
    // Only the text before the first ':' goes into an error: after it may come a password.
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(ConfigError::Scheme(String::new()));
    };
    let scheme = if scheme.eq_ignore_ascii_case("amqp") {
        Scheme::Amqp
    } else if scheme.eq_ignore_ascii_case("amqps") {
        Scheme::Amqps
    } else {
        return Err(ConfigError::Scheme(scheme.to_owned()));
    };
    // `amqp:host` or `amqp:/vhost` has no authority, so no host.
    let rest = rest.strip_prefix("//").ok_or(ConfigError::NoHost)?;
    Ok((scheme, rest))
}

/// Percent-decodes one part of the URI, which must then be UTF-8.
fn decode(text: &str, what: &'static str) -> Result<String, ConfigError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ConfigError::Encoding(what))
}

fn parse_userinfo(userinfo: Option<&str>) -> Result<(String, String), ConfigError> {
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (Some(user), Some(password)),
            None => (Some(info), None),
        },
    };
    let decode_or_guest = |part: Option<&str>, what| {
        part.map_or_else(|| Ok(DEFAULT_USER.to_owned()), |p| decode(p, what))
    };
    Ok((
        decode_or_guest(user, "username")?,
        decode_or_guest(password, "password")?,
    ))
}

/// `h1[:p1],h2[:p2],...`; a lone empty host is `localhost` (`amqp://`, `amqp://:10000`).
fn parse_hosts(list: &str, redact_port: bool) -> Result<Vec<HostSpec>, ConfigError> {
    if !list.contains(',') {
        let mut spec = parse_host(list, redact_port)?;
        if spec.host.is_empty() {
            DEFAULT_HOST.clone_into(&mut spec.host);
        }
        return Ok(vec![spec]);
    }
    list.split(',')
        .map(|text| match parse_host(text, redact_port)? {
            spec if spec.host.is_empty() => Err(ConfigError::NoHost),
            spec => Ok(spec),
        })
        .collect()
}

/// One `host[:port]` or `[ipv6][:port]`; the host may come back empty.
fn parse_host(text: &str, redact_port: bool) -> Result<HostSpec, ConfigError> {
    let bad_host = || ConfigError::Value {
        key: "host",
        value: text.to_owned(),
    };
    if let Some(literal) = text.strip_prefix('[') {
        let (address, after) = literal.split_once(']').ok_or_else(bad_host)?;
        address.parse::<Ipv6Addr>().map_err(|_| bad_host())?;
        let port = match after {
            "" => None,
            after => parse_port(after.strip_prefix(':').ok_or_else(bad_host)?, redact_port)?,
        };
        return Ok(HostSpec {
            host: address.to_owned(),
            port,
        });
    }
    let (host, port) = match text.split_once(':') {
        // Two colons: most likely an IPv6 address without its brackets.
        Some((_, port)) if port.contains(':') && !redact_port => return Err(bad_host()),
        Some((host, port)) => (host, parse_port(port, redact_port)?),
        None => (text, None),
    };
    let host = decode(host, "host")?;
    // What percent-decoding may have produced that no host name or address contains.
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/?#@[]:,".contains(c))
    {
        return Err(ConfigError::Value {
            key: "host",
            value: host,
        });
    }
    Ok(HostSpec { host, port })
}

/// A port from 1 to 65535; empty means absent (RFC 3986 §3.2.3).
fn parse_port(text: &str, redact: bool) -> Result<Option<u16>, ConfigError> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(port)),
        _ if redact => Err(ConfigError::Port("***".to_owned())),
        _ => Err(ConfigError::Port(text.to_owned())),
    }
}

/// The vhost from the path (`""` or `/...`); see the module docs for `/` and the empty path.
fn parse_vhost(path: &str) -> Result<String, ConfigError> {
    let vhost = match path.strip_prefix('/') {
        None | Some("") => return Ok("/".to_owned()),
        Some(segment) => decode(segment, "vhost")?,
    };
    if vhost.len() > MAX_VHOST_LEN {
        return Err(ConfigError::Value {
            key: "vhost",
            value: vhost,
        });
    }
    Ok(vhost)
}

fn parse_query(query: &str, tls: &mut Option<TlsOptions>) -> Result<Query, ConfigError> {
    let mut options = Query::default();
    let mut seen: Vec<&'static str> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key, "query")?;
        let value = decode(value, "query")?;
        let Some(&key) = OPTIONS.iter().find(|&&known| known == key) else {
            return Err(ConfigError::UnknownOption(key));
        };
        if seen.contains(&key) && key != "auth_mechanism" {
            return Err(ConfigError::Conflict {
                option: key,
                reason: "is given more than once",
            });
        }
        seen.push(key);
        if TLS_OPTIONS.contains(&key) {
            let Some(tls) = tls.as_mut() else {
                return Err(ConfigError::Conflict {
                    option: key,
                    reason: "needs an amqps URI",
                });
            };
            apply_tls_option(tls, key, value)?;
        } else {
            apply_option(&mut options, key, value)?;
        }
    }
    if let Some(tls) = tls {
        match (&tls.client_cert, &tls.client_key) {
            (Some(_), None) => return Err(needs("certfile", "needs keyfile too")),
            (None, Some(_)) => return Err(needs("keyfile", "needs certfile too")),
            _ => {}
        }
    }
    Ok(options)
}

fn needs(option: &'static str, reason: &'static str) -> ConfigError {
    ConfigError::Conflict { option, reason }
}

fn invalid(key: &'static str, value: String) -> ConfigError {
    ConfigError::Value { key, value }
}

/// A decimal number: digits only (no sign, no spaces), within `T`'s range.
fn number<T: FromStr>(key: &'static str, value: String) -> Result<T, ConfigError> {
    match value.parse() {
        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(invalid(key, value)),
    }
}

fn apply_option(options: &mut Query, key: &'static str, value: String) -> Result<(), ConfigError> {
    match key {
        "heartbeat" => options.heartbeat = Some(number(key, value)?),
        "frame_max" => {
            // 0 is "no limit"; anything else must reach FRAME-MIN-SIZE (0-9-1 §4.2.3).
            let frame_max: u32 = number(key, value.clone())?;
            if frame_max != 0 && frame_max < FRAME_MIN_SIZE {
                return Err(invalid(key, value));
            }
            options.frame_max = Some(frame_max);
        }
        "channel_max" => options.channel_max = Some(number(key, value)?),
        "connection_timeout" => match number::<u64>(key, value.clone())? {
            0 => return Err(invalid(key, value)),
            ms => options.connection_timeout = Some(Duration::from_millis(ms)),
        },
        "auth_mechanism" => {
            let mechanism = match value.to_ascii_lowercase().as_str() {
                "plain" => Mechanism::Plain,
                "amqplain" => Mechanism::AmqPlain,
                "external" => Mechanism::External,
                _ => return Err(invalid(key, value)),
            };
            options.mechanism.get_or_insert(mechanism);
        }
        "connection_name" => options.connection_name = Some(value),
        _ => return Err(ConfigError::UnknownOption(key.to_owned())),
    }
    Ok(())
}

fn apply_tls_option(
    tls: &mut TlsOptions,
    key: &'static str,
    value: String,
) -> Result<(), ConfigError> {
    let path = |value: String| {
        if value.is_empty() {
            Err(invalid(key, value))
        } else {
            Ok(Some(PathBuf::from(value)))
        }
    };
    match key {
        "cacertfile" => tls.ca_file = path(value)?,
        "certfile" => tls.client_cert = path(value)?,
        "keyfile" => tls.client_key = path(value)?,
        "verify" => match value.to_ascii_lowercase().as_str() {
            "verify_peer" => tls.verify = true,
            "verify_none" => tls.verify = false,
            _ => return Err(invalid(key, value)),
        },
        "server_name_indication" => {
            // Erlang's `disable` (send no SNI) has no equivalent here: rustls verifies the
            // certificate against the name it sends, so refuse it rather than verify
            // against a host called "disable".
            if value.eq_ignore_ascii_case("disable")
                || ServerName::try_from(value.as_str()).is_err()
            {
                return Err(invalid(key, value));
            }
            tls.server_name = Some(value);
        }
        _ => return Err(ConfigError::UnknownOption(key.to_owned())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(uri: &str) -> ParsedUri {
        match parse(uri) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{uri}: {e}"),
        }
    }

    fn err(uri: &str) -> ConfigError {
        match parse(uri) {
            Ok(parsed) => panic!("{uri} parsed as {parsed:?}"),
            Err(e) => e,
        }
    }

    fn host(host: &str, port: Option<u16>) -> HostSpec {
        HostSpec {
            host: host.into(),
            port,
        }
    }

    fn credentials(parsed: &ParsedUri) -> (&str, &str) {
        match &parsed.sasl {
            Sasl::Plain { username, password } => (username, password),
            other => panic!("not PLAIN: {other:?}"),
        }
    }

    // Appendix A of RabbitMQ's URI specification, one row per test line; absent components
    // show our defaults.
    #[test]
    fn spec_appendix_a() {
        let p = ok("amqp://user:pass@host:10000/vhost");
        assert_eq!(credentials(&p), ("user", "pass"));
        assert_eq!(p.hosts, [host("host", Some(10000))]);
        assert_eq!(p.virtual_host, "vhost");

        // Host is percent-decoded too (RFC 3986 §3.2.2 reg-name allows pct-encoded).
        let p = ok("amqp://user%61:%61pass@ho%61st:10000/v%2fhost");
        assert_eq!(credentials(&p), ("usera", "apass"));
        assert_eq!(p.hosts, [host("hoast", Some(10000))]);
        assert_eq!(p.virtual_host, "v/host");

        let p = ok("amqp://");
        assert_eq!(credentials(&p), ("guest", "guest"));
        assert_eq!(p.hosts, [host("localhost", None)]);
        assert_eq!(p.virtual_host, "/");
        assert!(p.tls.is_none());

        // Zero-length user name and password are not absent ones.
        let p = ok("amqp://:@/");
        assert_eq!(credentials(&p), ("", ""));
        assert_eq!(p.hosts, [host("localhost", None)]);
        assert_eq!(p.virtual_host, "/");

        assert_eq!(credentials(&ok("amqp://user@")), ("user", "guest"));
        assert_eq!(credentials(&ok("amqp://user:pass@")), ("user", "pass"));
        assert_eq!(ok("amqp://host").hosts, [host("host", None)]);
        assert_eq!(ok("amqp://:10000").hosts, [host("localhost", Some(10000))]);
        assert_eq!(ok("amqp:///vhost").virtual_host, "vhost");
        assert_eq!(ok("amqp://host/").virtual_host, "/");
        assert_eq!(ok("amqp://host/%2f").virtual_host, "/");
        assert_eq!(ok("amqp://host/%2F").virtual_host, "/");
        assert_eq!(ok("amqp://[::1]").hosts, [host("::1", None)]);
    }

    #[test]
    fn schemes() {
        assert!(ok("amqps://host").tls.is_some());
        assert!(ok("AMQPS://host").tls.is_some());
        assert!(ok("AMQP://host").tls.is_none());
        assert_eq!(err("http://host"), ConfigError::Scheme("http".into()));
        assert_eq!(err("localhost"), ConfigError::Scheme(String::new()));
        assert_eq!(err("amqp:host"), ConfigError::NoHost);
        assert_eq!(err("amqp:/vhost"), ConfigError::NoHost);
        // Whatever follows the first ':' may be a password: it stays out of the error.
        assert_eq!(
            err("guest:s3cret@host:5672"),
            ConfigError::Scheme("guest".into())
        );
    }

    #[test]
    fn whitespace_around_is_trimmed() {
        assert_eq!(ok(" amqp://host:1234\n").hosts, [host("host", Some(1234))]);
    }

    #[test]
    fn ports() {
        assert_eq!(ok("amqp://h:1").hosts[0].port, Some(1));
        assert_eq!(ok("amqp://h:65535").hosts[0].port, Some(65535));
        // RFC 3986 allows an empty port: the default.
        assert_eq!(ok("amqp://h:").hosts[0].port, None);
        for bad in ["0", "65536", "99999999999", "-1", "+1", "12a", "port", " 1"] {
            assert_eq!(
                err(&format!("amqp://h:{bad}")),
                ConfigError::Port(bad.into()),
                "{bad}"
            );
        }
        assert_eq!(
            err("amqp://h:5672:1"),
            ConfigError::Value {
                key: "host",
                value: "h:5672:1".into()
            }
        );
    }

    #[test]
    fn password_with_unencoded_delimiter_is_not_echoed() {
        for uri in [
            "amqp://user:pa/ss@host",
            "amqp://user:pa?ss@host",
            "amqp://user:pa#ss@host",
        ] {
            let e = err(uri);
            assert_eq!(e, ConfigError::Port("***".into()), "{uri}");
            assert!(!e.to_string().contains("pa"), "{e}");
        }
        // Encoded, they work.
        assert_eq!(
            credentials(&ok("amqp://user:pa%2F%3F%23%40ss@host")),
            ("user", "pa/?#@ss")
        );
    }

    #[test]
    fn raw_at_sign_in_password_uses_the_last_at() {
        let p = ok("amqp://user:p@ss@host");
        assert_eq!(credentials(&p), ("user", "p@ss"));
        assert_eq!(p.hosts, [host("host", None)]);
    }

    #[test]
    fn colon_in_password_is_kept() {
        assert_eq!(credentials(&ok("amqp://u:a:b@h")), ("u", "a:b"));
    }

    #[test]
    fn percent_decoding_is_utf8() {
        assert_eq!(
            credentials(&ok("amqp://%C3%A9t%C3%A9:p%20w@h")),
            ("été", "p w")
        );
        assert_eq!(ok("amqp://h/caf%C3%A9").virtual_host, "café");
        assert_eq!(err("amqp://%FF@h"), ConfigError::Encoding("username"));
        assert_eq!(err("amqp://u:%FF@h"), ConfigError::Encoding("password"));
        assert_eq!(err("amqp://h/%FF"), ConfigError::Encoding("vhost"));
        assert_eq!(err("amqp://h%FF"), ConfigError::Encoding("host"));
        assert_eq!(err("amqp://h?%FF=1"), ConfigError::Encoding("query"));
        // A stray '%' stays as it is.
        assert_eq!(credentials(&ok("amqp://u:100%@h")), ("u", "100%"));
        // '+' is a plus sign.
        assert_eq!(credentials(&ok("amqp://u:a+b@h")), ("u", "a+b"));
    }

    #[test]
    fn vhosts() {
        assert_eq!(ok("amqp://h").virtual_host, "/");
        assert_eq!(ok("amqp://h?heartbeat=1").virtual_host, "/");
        assert_eq!(ok("amqp://h/?heartbeat=1").virtual_host, "/");
        assert_eq!(ok("amqp://h/orders?heartbeat=1").virtual_host, "orders");
        assert_eq!(ok("amqp://h/%2forders").virtual_host, "/orders");
        // kombu's spelling of the default vhost, and a multi-segment path taken as it stands.
        assert_eq!(ok("amqp://guest:guest@localhost//").virtual_host, "/");
        assert_eq!(ok("amqp://h/a/b").virtual_host, "a/b");
        assert_eq!(ok("amqp://h/v#fragment").virtual_host, "v");
        let long = "v".repeat(256);
        assert!(matches!(
            err(&format!("amqp://h/{long}")),
            ConfigError::Value { key: "vhost", .. }
        ));
        assert_eq!(
            ok(&format!("amqp://h/{}", &long[1..])).virtual_host.len(),
            255
        );
    }

    #[test]
    fn ipv6() {
        assert_eq!(ok("amqp://[::1]:5673").hosts, [host("::1", Some(5673))]);
        assert_eq!(
            ok("amqps://u:p@[2001:db8::7]/vh").hosts,
            [host("2001:db8::7", None)]
        );
        assert_eq!(
            ok("amqp://[::1]:5672,[fe80::1]").hosts,
            [host("::1", Some(5672)), host("fe80::1", None)]
        );
        assert_eq!(ok("amqp://[::1]:").hosts, [host("::1", None)]);
        for bad in [
            "[::1",
            "[not-an-address]",
            "[::1]5672",
            "::1",
            "2001:db8::7:5672",
        ] {
            assert_eq!(
                err(&format!("amqp://{bad}")),
                ConfigError::Value {
                    key: "host",
                    value: bad.into()
                },
                "{bad}"
            );
        }
        assert_eq!(err("amqp://[::1]:x"), ConfigError::Port("x".into()));
    }

    #[test]
    fn several_hosts() {
        let p = ok("amqp://u:p@h1:5672,h2,h3:5674/vh");
        assert_eq!(
            p.hosts,
            [
                host("h1", Some(5672)),
                host("h2", None),
                host("h3", Some(5674))
            ]
        );
        assert_eq!(credentials(&p), ("u", "p"));
        assert_eq!(p.virtual_host, "vh");
        assert_eq!(err("amqp://h1,,h2"), ConfigError::NoHost);
        assert_eq!(err("amqp://h1,"), ConfigError::NoHost);
        assert_eq!(err("amqp://,h1"), ConfigError::NoHost);
        assert_eq!(err("amqp://h1,:5672"), ConfigError::NoHost);
        assert_eq!(err("amqp://h1,h2:0"), ConfigError::Port("0".into()));
    }

    #[test]
    fn decoded_host_must_look_like_a_host() {
        for bad in ["a%20b", "a%2Fb", "a%3Ab", "a%40b"] {
            assert!(
                matches!(
                    err(&format!("amqp://{bad}")),
                    ConfigError::Value { key: "host", .. }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn numeric_options() {
        let p = ok("amqp://h?heartbeat=5&frame_max=131072&channel_max=64&connection_timeout=10000");
        assert_eq!(p.heartbeat, Some(5));
        assert_eq!(p.frame_max, 131_072);
        assert_eq!(p.channel_max, 64);
        assert_eq!(p.connection_timeout, Duration::from_secs(10));

        let p = ok("amqp://h");
        assert_eq!(
            (p.heartbeat, p.frame_max, p.channel_max),
            (None, 0, 0),
            "defaults"
        );
        assert_eq!(p.connection_timeout, DEFAULT_CONNECTION_TIMEOUT);
        assert_eq!(ok("amqp://h?heartbeat=0").heartbeat, Some(0));
        assert_eq!(ok("amqp://h?frame_max=0").frame_max, 0);
        assert_eq!(ok("amqp://h?frame_max=4096").frame_max, 4096);

        for (key, value) in [
            ("heartbeat", "65536"),
            ("heartbeat", "-1"),
            ("heartbeat", "5s"),
            ("heartbeat", ""),
            ("frame_max", "4095"),
            ("frame_max", "1"),
            ("frame_max", "4294967296"),
            ("channel_max", "65536"),
            ("connection_timeout", "0"),
            ("connection_timeout", "1.5"),
            ("connection_timeout", "infinity"),
        ] {
            assert_eq!(
                err(&format!("amqp://h?{key}={value}")),
                ConfigError::Value {
                    key,
                    value: value.into()
                },
                "{key}={value}"
            );
        }
        // No '=' at all is an empty value.
        assert_eq!(
            err("amqp://h?heartbeat"),
            ConfigError::Value {
                key: "heartbeat",
                value: String::new()
            }
        );
    }

    #[test]
    fn auth_mechanism() {
        let p = ok("amqp://u:p@h?auth_mechanism=AMQPLAIN");
        assert_eq!(
            p.sasl,
            Sasl::AmqPlain {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            ok("amqp://h?auth_mechanism=Plain").sasl,
            Sasl::plain("guest", "guest")
        );
        assert_eq!(ok("amqps://h?auth_mechanism=external").sasl, Sasl::External);
        // Repeated as RabbitMQ documents: the first wins, the others must still be valid.
        assert_eq!(
            ok("amqp://h?auth_mechanism=external&auth_mechanism=plain").sasl,
            Sasl::External
        );
        assert_eq!(
            err("amqp://h?auth_mechanism=plain&auth_mechanism=cram-md5"),
            ConfigError::Value {
                key: "auth_mechanism",
                value: "cram-md5".into()
            }
        );
    }

    #[test]
    fn tls_options() {
        let p = ok("amqps://myhost?cacertfile=/path/to/ca_certificate.pem\
            &certfile=/path/to/client_certificate.pem&keyfile=/path/to/client%20key.pem\
            &verify=verify_peer&server_name_indication=myhost");
        let Some(tls) = p.tls else { panic!("no tls") };
        assert_eq!(tls.ca_file, Some("/path/to/ca_certificate.pem".into()));
        assert_eq!(
            tls.client_cert,
            Some("/path/to/client_certificate.pem".into())
        );
        assert_eq!(tls.client_key, Some("/path/to/client key.pem".into()));
        assert!(tls.verify);
        assert_eq!(tls.server_name.as_deref(), Some("myhost"));
        assert!(tls.config.is_none());
        assert_eq!(p.hosts, [host("myhost", None)]);

        let tls = ok("amqps://h?verify=verify_none").tls;
        assert!(tls.is_some_and(|t| !t.verify));
        assert!(ok("amqps://h").tls.is_some_and(|t| t.verify));
        assert_eq!(
            ok("amqps://h?server_name_indication=10.0.0.1")
                .tls
                .and_then(|t| t.server_name),
            Some("10.0.0.1".into())
        );

        for (key, value) in [
            ("verify", "yes"),
            ("server_name_indication", "disable"),
            ("server_name_indication", "not a name"),
            ("server_name_indication", ""),
            ("cacertfile", ""),
        ] {
            assert_eq!(
                err(&format!("amqps://h?{key}={value}")),
                ConfigError::Value {
                    key,
                    value: value.into()
                },
                "{key}={value}"
            );
        }
    }

    #[test]
    fn tls_options_need_amqps() {
        for key in TLS_OPTIONS {
            assert_eq!(
                err(&format!("amqp://h?{key}=x")),
                ConfigError::Conflict {
                    option: key,
                    reason: "needs an amqps URI"
                }
            );
        }
    }

    #[test]
    fn client_cert_and_key_go_together() {
        assert_eq!(
            err("amqps://h?certfile=/c.pem"),
            ConfigError::Conflict {
                option: "certfile",
                reason: "needs keyfile too"
            }
        );
        assert_eq!(
            err("amqps://h?keyfile=/k.pem"),
            ConfigError::Conflict {
                option: "keyfile",
                reason: "needs certfile too"
            }
        );
    }

    #[test]
    fn unknown_and_repeated_options() {
        assert_eq!(
            err("amqp://h?heartbeat=5&bogus=1"),
            ConfigError::UnknownOption("bogus".into())
        );
        // Keys are case-sensitive, as in the Erlang client.
        assert_eq!(
            err("amqp://h?Heartbeat=5"),
            ConfigError::UnknownOption("Heartbeat".into())
        );
        // Erlang's TLS options this client does not have.
        for key in ["fail_if_no_peer_cert", "password", "depth"] {
            assert_eq!(
                err(&format!("amqps://h?{key}=1")),
                ConfigError::UnknownOption(key.into())
            );
        }
        assert_eq!(
            err("amqp://h?heartbeat=5&heartbeat=10"),
            ConfigError::Conflict {
                option: "heartbeat",
                reason: "is given more than once"
            }
        );
        // Empty pairs are skipped.
        assert_eq!(ok("amqp://h?&heartbeat=5&&").heartbeat, Some(5));
        assert_eq!(ok("amqp://h?").heartbeat, None);
    }

    #[test]
    fn connection_name_is_decoded() {
        assert_eq!(
            ok("amqp://h?connection_name=orders%20worker%201").connection_name,
            Some("orders worker 1".into())
        );
        assert_eq!(ok("amqp://h").connection_name, None);
    }

    #[test]
    fn external_ignores_credentials() {
        let p = ok("amqps://app:secret@h?auth_mechanism=external&certfile=/c&keyfile=/k");
        assert_eq!(p.sasl, Sasl::External);
    }
}
