//! `auth-service config`: every effective setting on a line of its own, with
//! the layer it came from; secrets redacted (URL passwords, keys, tokens).

use std::fmt::Write as _;

use config::{Value, ValueKind};

use super::layers::Resolved;

const REDACTED: &str = "<redacted>";

/// One line per setting: `key = value  # origin`, as TOML with comments.
pub fn render(resolved: &Resolved) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# APP_ENV: {}",
        resolved.app_env.as_deref().unwrap_or("(unset: embedded storage unless overridden)")
    );
    let _ = writeln!(out, "# layers read, in order: {}", resolved.layers.join(" → "));
    let lines: Vec<(String, String)> = resolved
        .values
        .iter()
        .map(|(key, (value, origin))| {
            (format!("{key} = {}", display(key, value)), origin.to_string())
        })
        .collect();
    let width = lines.iter().map(|(setting, _)| setting.chars().count()).max().unwrap_or(0);
    for (setting, origin) in lines {
        let _ = writeln!(out, "{setting:width$}  # {origin}");
    }
    out
}

/// A value as TOML would write it, redacted when it is or holds a secret.
fn display(key: &str, value: &Value) -> String {
    match &value.kind {
        ValueKind::String(s) if is_secret_key(key) && !s.is_empty() => quote(REDACTED),
        ValueKind::String(s) => quote(&redact_urls(s)),
        ValueKind::Array(items) => {
            let items: Vec<String> = items.iter().map(|item| display(key, item)).collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Nil => "\"\"".to_owned(),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Keys whose whole value is a secret.
fn is_secret_key(key: &str) -> bool {
    let name = key.rsplit('.').next().unwrap_or(key);
    ["password", "secret", "token", "_key"].iter().any(|s| name.ends_with(s))
}

/// Hides the password of every URL in `text` (comma-separated lists too):
/// `scheme://user:<redacted>@host`, and `password=<redacted>` parameters.
pub fn redact_urls(text: &str) -> String {
    text.split(',').map(redact_url).collect::<Vec<_>>().join(",")
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}={REDACTED}")
                    }
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_urls("postgres://auth:hunter2@db:5432/auth_db?sslmode=require"),
            "postgres://auth:<redacted>@db:5432/auth_db?sslmode=require"
        );
        assert_eq!(redact_urls("redis://:pw@r:6379/0"), "redis://:<redacted>@r:6379/0");
        assert_eq!(redact_urls("postgres://auth@db/x"), "postgres://auth@db/x");
        assert_eq!(
            redact_urls("postgres://db/x?user=a&password=hunter2"),
            "postgres://db/x?user=a&password=<redacted>"
        );
        assert_eq!(
            redact_urls("redis://:a@n1:7000,redis://:b@n2:7000"),
            "redis://:<redacted>@n1:7000,redis://:<redacted>@n2:7000"
        );
        assert_eq!(redact_urls("info,auth_service=debug"), "info,auth_service=debug");
    }

    #[test]
    fn secret_keys_are_hidden_whole() {
        assert!(is_secret_key("tokens.key_encryption_key"));
        assert!(is_secret_key("redis.password"));
        assert!(!is_secret_key("redis.key_prefix"));
        assert!(!is_secret_key("postgres.url"));
    }
}
