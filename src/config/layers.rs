//! Where settings come from, in order, and which layer gave each key:
//!
//! 1. the built-in `default.toml`;
//! 2. `<config dir>/default.toml`, if present;
//! 3. the built-in `<APP_ENV>` layer (`local`, `docker`, `production`);
//! 4. `<config dir>/<APP_ENV>.toml`, if present;
//! 5. `AUTH__<SECTION>__<KEY>` variables, then `RUST_LOG` for `log.filter`.
//!
//! The `APP_ENV` layers are compiled in, so `APP_ENV` means the same wherever
//! the binary runs (a systemd unit, a container, `cargo install`); files on
//! disk only override. The config dir is `--config-dir`, `AUTH__CONFIG_DIR`,
//! or `./config` when it exists.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use config::{Config, Environment, File, FileFormat, Source as _, Value, ValueKind};

use super::SettingsError;

pub(super) const BUILT_IN_DEFAULT: &str = include_str!("../../config/default.toml");

/// The `APP_ENV` layers compiled into the binary.
pub(super) const BUILT_IN_LAYERS: &[(&str, &str)] = &[
    ("local", include_str!("../../config/local.toml")),
    ("docker", include_str!("../../config/docker.toml")),
    ("production", include_str!("../../config/production.toml")),
];

/// Where files are looked for when no directory is named.
const DEFAULT_CONFIG_DIR: &str = "config";
/// The prefix of every setting's variable.
const PREFIX: &str = "AUTH__";
/// Names the config directory: read by the loader, not a setting.
pub const CONFIG_DIR_VARIABLE: &str = "AUTH__CONFIG_DIR";
/// Variables that start like ours but are not settings (read elsewhere).
pub const NON_SETTING_VARIABLES: &[&str] =
    &["AUTH_ADMIN_PASSWORD", "AUTH_ADMIN_SESSION", "AUTH_OFFLINE_RUST"];

/// Where one effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltInDefault,
    BuiltInLayer(&'static str),
    File(PathBuf),
    Variable(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BuiltInDefault => f.write_str("built-in default"),
            Self::BuiltInLayer(env) => write!(f, "built-in {env} layer"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Variable(name) => write!(f, "env {name}"),
        }
    }
}

/// What the loader reads: the process's environment, or a test's.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `APP_ENV`; empty counts as unset.
    pub app_env: Option<String>,
    /// Where files are read from.
    pub config_dir: ConfigDir,
    /// Every environment variable (only ours are read).
    pub variables: BTreeMap<String, String>,
}

impl Inputs {
    /// The process's: `config_dir` is `--config-dir`, if given.
    pub fn from_process(config_dir: Option<PathBuf>) -> Self {
        let variables: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        let named_dir = variables.get(CONFIG_DIR_VARIABLE).filter(|d| !d.is_empty());
        let config_dir = match config_dir.or_else(|| named_dir.map(PathBuf::from)) {
            Some(dir) => ConfigDir::Named(dir),
            None => ConfigDir::Beside(std::env::current_dir().unwrap_or_default()),
        };
        Self {
            app_env: variables.get("APP_ENV").filter(|e| !e.is_empty()).cloned(),
            config_dir,
            variables,
        }
    }
}

/// Where configuration files are read from.
#[derive(Debug, Clone, Default)]
pub enum ConfigDir {
    /// Nowhere: the built-in layers and the variables only.
    #[default]
    None,
    /// `config/` in this directory (the working directory), when it exists.
    Beside(PathBuf),
    /// Named by `--config-dir` or `AUTH__CONFIG_DIR`: it must exist.
    Named(PathBuf),
}

/// Every layer read, and each key's effective value with its origin.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub app_env: Option<String>,
    /// The layers actually read, in order (files with their paths).
    pub layers: Vec<String>,
    /// Every setting, by dotted key: its value and the layer that gave it.
    pub values: BTreeMap<String, (Value, Origin)>,
}

impl Resolved {
    /// Reads every layer. Fails on what no layer may hold: an unknown
    /// `APP_ENV`, a missing named directory, an unreadable or malformed
    /// file, a key that is no setting, a variable that looks like ours but
    /// isn't.
    pub fn read(inputs: &Inputs) -> Result<Self, SettingsError> {
        reject_lookalike_variables(&inputs.variables)?;
        let dir = config_dir(inputs)?;
        let mut resolved =
            Self { app_env: inputs.app_env.clone(), layers: Vec::new(), values: BTreeMap::new() };

        let defaults = parse(BUILT_IN_DEFAULT, &Origin::BuiltInDefault)?;
        let known: BTreeSet<String> = defaults.keys().cloned().collect();
        resolved.apply("built-in default".into(), defaults, |_| Origin::BuiltInDefault);

        let file = |name: &str| dir.as_ref().map(|d| d.join(format!("{name}.toml")));
        if let Some(path) = file("default").filter(|p| p.exists()) {
            resolved.apply_file(&path, &known)?;
        }
        if let Some(env) = &inputs.app_env {
            let built_in = BUILT_IN_LAYERS.iter().find(|(name, _)| name == env);
            let on_disk = file(env).filter(|p| p.exists());
            if built_in.is_none() && on_disk.is_none() {
                return Err(SettingsError::UnknownEnvironment {
                    value: env.clone(),
                    looked_in: match (&inputs.config_dir, file(env)) {
                        (_, Some(path)) => path.display().to_string(),
                        (ConfigDir::Beside(cwd), None) => {
                            format!(
                                "{} (no such directory)",
                                cwd.join(DEFAULT_CONFIG_DIR).join(format!("{env}.toml")).display()
                            )
                        }
                        (_, None) => "no configuration directory".to_owned(),
                    },
                });
            }
            if let Some((name, text)) = built_in {
                let origin = Origin::BuiltInLayer(name);
                let values = parse(text, &origin)?;
                resolved.apply(format!("built-in {name} layer"), values, |_| origin.clone());
            }
            if let Some(path) = on_disk {
                resolved.apply_file(&path, &known)?;
            }
        }
        resolved.apply_variables(&inputs.variables, &known)?;
        Ok(resolved)
    }

    /// The merged configuration, for typed deserialisation.
    pub fn config(&self) -> Result<Config, SettingsError> {
        let mut builder = Config::builder();
        for (key, (value, _)) in &self.values {
            builder = builder.set_override(key, value.clone())?;
        }
        Ok(builder.build()?)
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.values.get(key).map(|(_, origin)| origin)
    }

    fn apply(
        &mut self,
        layer: String,
        values: BTreeMap<String, Value>,
        origin: impl Fn(&str) -> Origin,
    ) {
        for (key, value) in values {
            let origin = origin(&key);
            self.values.insert(key, (value, origin));
        }
        self.layers.push(layer);
    }

    fn apply_file(&mut self, path: &Path, known: &BTreeSet<String>) -> Result<(), SettingsError> {
        let origin = Origin::File(path.to_owned());
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::File { path: path.to_owned(), reason: e.to_string() })?;
        let values = parse(&text, &origin)?;
        if let Some(key) = values.keys().find(|k| !known.contains(*k)) {
            return Err(SettingsError::UnknownKey { key: key.clone(), origin });
        }
        self.apply(origin.to_string(), values, |_| origin.clone());
        Ok(())
    }

    fn apply_variables(
        &mut self,
        variables: &BTreeMap<String, String>,
        known: &BTreeSet<String>,
    ) -> Result<(), SettingsError> {
        // Setting name → variable name, for origins and errors.
        let mut names = BTreeMap::new();
        let mut settings = config::Map::new();
        for (name, value) in variables {
            if !has_prefix(name, PREFIX) || name.eq_ignore_ascii_case(CONFIG_DIR_VARIABLE) {
                continue;
            }
            let key = name[PREFIX.len()..].to_lowercase().replace("__", ".");
            if !known.contains(&key) {
                return Err(SettingsError::UnknownKey {
                    key,
                    origin: Origin::Variable(name.clone()),
                });
            }
            names.insert(key, name.clone());
            settings.insert(name.clone(), value.clone());
        }
        let parsed = Environment::with_prefix("AUTH")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            // AUTH__NET__TRUSTED_PROXIES=10.0.0.0/8,192.168.1.7
            .list_separator(",")
            .with_list_parse_key("net.trusted_proxies")
            .with_list_parse_key("unsafe.allow")
            .with_list_parse_key("lookup.allowed_peers")
            .with_list_parse_key("admin.allowed_peers")
            .source(Some(settings))
            .collect()?;
        if !names.is_empty() {
            let listed: Vec<&str> = names.values().map(String::as_str).collect();
            self.layers.push(format!("environment ({})", listed.join(", ")));
        }
        for (key, value) in parsed {
            let origin = Origin::Variable(names.get(&key).cloned().unwrap_or_default());
            self.values.insert(key, (value, origin));
        }
        // tracing's own variable wins over log.filter, as it always has.
        if let Some(filter) = variables.get("RUST_LOG").filter(|f| !f.is_empty()) {
            let origin = Origin::Variable("RUST_LOG".into());
            let value = Value::new(None, ValueKind::String(filter.clone()));
            self.values.insert("log.filter".into(), (value, origin));
            self.layers.push("environment (RUST_LOG)".into());
        }
        Ok(())
    }
}

/// The directory files are read from: the named one (which must exist), or
/// `./config` when present.
fn config_dir(inputs: &Inputs) -> Result<Option<PathBuf>, SettingsError> {
    match &inputs.config_dir {
        ConfigDir::None => Ok(None),
        ConfigDir::Beside(cwd) => {
            let dir = cwd.join(DEFAULT_CONFIG_DIR);
            Ok(dir.is_dir().then_some(dir))
        }
        ConfigDir::Named(dir) if dir.is_dir() => Ok(Some(dir.clone())),
        ConfigDir::Named(dir) => Err(SettingsError::File {
            path: dir.clone(),
            reason: format!("not a directory (named by --config-dir or {CONFIG_DIR_VARIABLE})"),
        }),
    }
}

/// `AUTH_SESSION__TTL_SECS` (one underscore) would be silently ignored: a
/// setting an operator believes in that does nothing. Refuse it.
fn reject_lookalike_variables(variables: &BTreeMap<String, String>) -> Result<(), SettingsError> {
    for name in variables.keys() {
        let ours = has_prefix(name, "AUTH_") || has_prefix(name, "AUTH-");
        let setting = has_prefix(name, PREFIX);
        let allowed = NON_SETTING_VARIABLES.iter().any(|n| n.eq_ignore_ascii_case(name));
        if ours && !setting && !allowed {
            return Err(SettingsError::LookalikeVariable(name.clone()));
        }
    }
    Ok(())
}

fn has_prefix(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// A TOML layer as dotted keys → leaf values (arrays are leaves).
fn parse(text: &str, origin: &Origin) -> Result<BTreeMap<String, Value>, SettingsError> {
    let table = File::from_str(text, FileFormat::Toml)
        .collect()
        .map_err(|e| SettingsError::Malformed { origin: origin.clone(), reason: e.to_string() })?;
    let mut flat = BTreeMap::new();
    flatten("", table, &mut flat);
    Ok(flat)
}

fn flatten(prefix: &str, table: config::Map<String, Value>, out: &mut BTreeMap<String, Value>) {
    for (name, value) in table {
        let key = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
        match value.kind {
            ValueKind::Table(inner) => flatten(&key, inner, out),
            _ => {
                out.insert(key, value);
            }
        }
    }
}
