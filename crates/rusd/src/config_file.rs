//! `--config-file`: etcd's YAML server configuration, read into the serving flags.
//!
//! As in etcd 3.4 (`embed.ConfigFromFile`):
//! * the keys are the flag names (`name`, `data-dir`, `listen-client-urls`, ...); URL lists are
//!   comma-separated strings, `log-outputs` and `cipher-suites` are lists;
//! * TLS sits in two mappings, `client-transport-security` and `peer-transport-security`, with
//!   `cert-file`, `key-file`, `client-cert-auth`, `trusted-ca-file` and `auto-tls`;
//! * a key that is missing or `null` keeps its default, and keys rusd does not know are
//!   ignored (reported, so a typo does not pass unnoticed);
//! * duration fields (`experimental-watch-progress-notify-interval`,
//!   `experimental-corrupt-check-time`) are numbers of nanoseconds (Go's `time.Duration`);
//! * the file replaces every other flag and `ETCD_*` variable: they are ignored.

use std::path::Path;

use anyhow::{bail, Context};
use clap::{Args, Command, FromArgMatches};
use yaml_rust2::{Yaml, YamlLoader};

use crate::cli::ServeFlags;

/// The keys of each `*-transport-security` mapping etcd reads.
const SECURITY_KEYS: [&str; 5] = [
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
];

/// Keys whose value is a Go `time.Duration`: a number of nanoseconds.
const DURATION_KEYS: [&str; 2] = [
    "experimental-watch-progress-notify-interval",
    "experimental-corrupt-check-time",
];

/// The serving flags a configuration file sets, with the keys it ignored.
#[derive(Debug)]
pub struct Loaded {
    /// The flags, defaults where the file says nothing.
    pub flags: ServeFlags,
    /// Keys rusd does not know (etcd ignores unknown keys too).
    pub ignored: Vec<String>,
}

/// Reads the file at `path`.
///
/// # Errors
/// The file cannot be read, is not YAML, is not a mapping, or holds a value the flag refuses.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config-file {}", path.display()))?;
    parse(&text).with_context(|| format!("--config-file {}", path.display()))
}

/// Parses a configuration file's text.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str) -> anyhow::Result<Loaded> {
    let docs = YamlLoader::load_from_str(text).context("not valid YAML")?;
    // Every flag but --config-file itself, with no environment variables behind them.
    let command = ServeFlags::augment_args(Command::new("rusd")).mut_args(|arg| arg.env(None));
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| *long != "config-file")
        .map(str::to_owned)
        .collect();
    let mut args = vec!["rusd".to_owned()];
    let mut ignored = Vec::new();
    match docs.first() {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Hash(map)) => {
            for (key, value) in map {
                let Some(key) = key.as_str() else {
                    bail!("a key is not a string: {key:?}");
                };
                match key {
                    "client-transport-security" | "peer-transport-security" => {
                        let prefix = if key.starts_with("peer") { "peer-" } else { "" };
                        let Yaml::Hash(security) = value else {
                            if value.is_null() {
                                continue;
                            }
                            bail!("{key}: expected a mapping");
                        };
                        for (field, value) in security {
                            let field = field.as_str().unwrap_or_default();
                            if SECURITY_KEYS.contains(&field) {
                                push(&mut args, &format!("{prefix}{field}"), value)?;
                            } else {
                                ignored.push(format!("{key}.{field}"));
                            }
                        }
                    }
                    _ if known.iter().any(|k| k == key) => push(&mut args, key, value)?,
                    _ => ignored.push(key.to_owned()),
                }
            }
        }
        Some(other) => bail!("expected a mapping of settings, found {other:?}"),
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
    let flags = ServeFlags::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Loaded { flags, ignored })
}

/// Appends `--key=value` for a setting; `null` keeps the default.
fn push(args: &mut Vec<String>, key: &str, value: &Yaml) -> anyhow::Result<()> {
    let text = match value {
        Yaml::Null => return Ok(()),
        Yaml::Integer(n) if DURATION_KEYS.contains(&key) => format!("{n}ns"),
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Array(items) => items
            .iter()
            .map(|item| match item {
                Yaml::String(s) | Yaml::Real(s) => Ok(s.clone()),
                Yaml::Integer(n) => Ok(n.to_string()),
                other => bail!("{key}: unexpected list item {other:?}"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        other => bail!("{key}: unexpected value {other:?}"),
    };
    args.push(format!("--{key}={text}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_security_lists_and_defaults() {
        let loaded = parse(
            "# etcd's sample layout\n\
             name: 'm1'\n\
             data-dir: /var/lib/m1\n\
             wal-dir:\n\
             snapshot-count: 5000\n\
             heartbeat-interval: 50\n\
             listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379\n\
             initial-cluster-state: 'existing'\n\
             max-concurrent-streams: 7\n\
             log-outputs: [stdout]\n\
             cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n\
             debug: false\n\
             enable-pprof: true\n\
             experimental-watch-progress-notify-interval: 5000000000\n\
             max-snapshots: 5\n\
             client-transport-security:\n  cert-file: c.crt\n  key-file: c.key\n  client-cert-auth: true\n  trusted-ca-file:\n  auto-tls: false\n\
             peer-transport-security:\n  cert-file: p.crt\n  auto-tls: true\n  crl-file: x\n",
        )
        .expect("parses");
        let f = &loaded.flags;
        assert_eq!(f.name, "m1");
        assert_eq!(f.data_dir.as_deref(), Some("/var/lib/m1"));
        assert_eq!(f.wal_dir, None);
        assert_eq!(f.snapshot_count, 5000);
        assert_eq!(f.heartbeat_interval, 50);
        assert_eq!(f.election_timeout, 1000, "a missing key keeps its default");
        assert_eq!(
            f.listen_client_urls,
            "http://127.0.0.1:2379,http://10.0.0.1:2379"
        );
        assert_eq!(f.initial_cluster_state, "existing");
        assert_eq!(f.max_concurrent_streams, Some(7));
        assert_eq!(f.log_outputs, "stdout");
        assert_eq!(
            f.tls.cipher_suites.as_deref(),
            Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
        );
        assert_eq!(f.debug, Some(false));
        assert_eq!(f.enable_pprof, Some(true));
        assert_eq!(
            f.experimental_watch_progress_notify_interval,
            "5000000000ns"
        );
        assert_eq!(f.tls.cert_file.as_deref(), Some("c.crt"));
        assert_eq!(f.tls.key_file.as_deref(), Some("c.key"));
        assert_eq!(f.tls.client_cert_auth, Some(true));
        assert_eq!(f.tls.trusted_ca_file, None);
        assert_eq!(f.tls.auto_tls, Some(false));
        assert_eq!(f.tls.peer_cert_file.as_deref(), Some("p.crt"));
        assert_eq!(f.tls.peer_auto_tls, Some(true));
        assert_eq!(
            loaded.ignored,
            ["max-snapshots", "peer-transport-security.crl-file"]
        );
    }

    #[test]
    fn empty_file_is_all_defaults() {
        for text in ["", "# nothing\n", "~\n"] {
            let loaded = parse(text).expect("parses");
            assert_eq!(loaded.flags.name, "default");
            assert_eq!(loaded.flags.listen_client_urls, "http://localhost:2379");
            assert!(loaded.ignored.is_empty());
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let err = |text: &str| format!("{:#}", parse(text).expect_err(text));
        assert!(err("name: [unclosed").contains("not valid YAML"));
        assert!(err("- a\n- b\n").contains("expected a mapping"));
        assert!(err("snapshot-count: many\n").contains("snapshot-count"));
        assert!(err("client-transport-security: yes-please\n").contains("expected a mapping"));
        assert!(err("name: {a: b}\n").contains("name: unexpected value"));
        assert!(err("bcrypt-cost: 99\n").contains("bcrypt-cost"));
    }
}
