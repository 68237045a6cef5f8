//! Reading config files and turning them into the compiled [`Config`]. Every error names the
//! file, the place in it and the offending value; `ratelimit-service validate` prints the same
//! messages as a failed hot reload.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::{RawDescriptor, RawFile, RawRateLimit};
use super::{Config, Kind, Limit, MICROS, Node, Pattern, Unit};
use crate::store::Mode;
use crate::window::{Algorithm, Window};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Where in the file, e.g. `descriptors[0].rate_limit.unit`; empty for the whole file.
    pub place: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.place,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// A compiled config, the files it came from and the warnings loading it raised.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub files: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// The raw bytes of every config file, in load order: what hot reload compares.
pub type Snapshot = Vec<(PathBuf, Vec<u8>)>;

/// Loads a YAML file, or every `*.yaml`/`*.yml` file of a directory (one domain each; hidden
/// entries such as Kubernetes' `..data` are skipped).
pub fn load_path(path: &Path) -> Result<Loaded, ConfigError> {
    compile(&read_snapshot(path)?)
}

/// Reads the files `path` names, without compiling them.
pub fn read_snapshot(path: &Path) -> Result<Snapshot, ConfigError> {
    config_files(path)?
        .into_iter()
        .map(|file| match std::fs::read(&file) {
            Ok(bytes) => Ok((file, bytes)),
            Err(e) => Err(ConfigError {
                file,
                place: String::new(),
                message: format!("cannot read: {e}"),
            }),
        })
        .collect()
}

/// Compiles a snapshot; domains must be unique across its files.
pub fn compile(snapshot: &Snapshot) -> Result<Loaded, ConfigError> {
    let mut loaded = Loaded {
        config: Config::default(),
        files: Vec::new(),
        warnings: Vec::new(),
    };
    let mut origin: HashMap<String, PathBuf> = HashMap::new();
    for (file, bytes) in snapshot {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError {
            file: file.clone(),
            place: String::new(),
            message: format!("not UTF-8: {e}"),
        })?;
        let (domain, node) = parse_file(file, text, &mut loaded.warnings)?;
        if let Some(first) = origin.get(&domain) {
            return Err(ConfigError {
                file: file.clone(),
                place: "domain".into(),
                message: format!(
                    "duplicate domain '{domain}', already defined in {}",
                    first.display()
                ),
            });
        }
        origin.insert(domain.clone(), file.clone());
        loaded.config.domains.insert(domain, node);
        loaded.files.push(file.clone());
    }
    Ok(loaded)
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let err = |message: String| ConfigError {
        file: path.to_path_buf(),
        place: String::new(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| err(format!("cannot list: {e}")))? {
        let p = entry.map_err(|e| err(format!("cannot list: {e}")))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if yaml && !name.starts_with('.') && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(err("directory holds no .yaml or .yml file".into()));
    }
    Ok(files)
}

/// Parses and compiles one file's text: its domain and descriptor tree.
pub fn parse_file(
    file: &Path,
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<(String, Node), ConfigError> {
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        place: String::new(),
        message: e.to_string(),
    })?;
    let mut c = Compiler {
        file,
        warnings,
        names: HashMap::new(),
        warned: Default::default(),
    };
    if raw.domain.is_empty() {
        return Err(c.error("domain", "must not be empty".into()));
    }
    let mut root = Node::default();
    c.descriptors(&mut root, &raw.descriptors, "descriptors", &raw.domain)?;
    Ok((raw.domain, root))
}

struct Compiler<'a> {
    file: &'a Path,
    warnings: &'a mut Vec<String>,
    /// Limit names seen, for `replaces` checks.
    names: HashMap<String, String>,
    warned: std::collections::HashSet<&'static str>,
}

impl Compiler<'_> {
    fn error(&self, place: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            place: place.to_string(),
            message,
        }
    }

    /// One warning per kind of accepted-but-ignored key and file.
    fn warn_once(&mut self, key: &'static str, place: &str, message: &str) {
        if self.warned.insert(key) {
            self.warnings
                .push(format!("{}: {place}: {message}", self.file.display()));
        }
    }

    fn descriptors(
        &mut self,
        parent: &mut Node,
        list: &[RawDescriptor],
        place: &str,
        path: &str,
    ) -> Result<(), ConfigError> {
        let mut seen: HashMap<(String, Option<String>), usize> = HashMap::new();
        for (i, d) in list.iter().enumerate() {
            let here = format!("{place}[{i}]");
            if d.key.is_empty() {
                return Err(self.error(&format!("{here}.key"), "must not be empty".into()));
            }
            let ident = (d.key.clone(), d.value.clone());
            if let Some(first) = seen.insert(ident, i) {
                let what = match &d.value {
                    Some(v) => format!("key '{}' with value '{v}'", d.key),
                    None => format!("key '{}' without a value", d.key),
                };
                return Err(self.error(
                    &here,
                    format!("duplicate descriptor: {what} is already at {place}[{first}]"),
                ));
            }
            let value = d.value.as_deref().filter(|v| !v.is_empty());
            let my_path = match value {
                Some(v) => format!("{path}.{}_{v}", d.key),
                None => format!("{path}.{}", d.key),
            };
            let is_wildcard = value.is_some_and(|v| v.contains('*'));
            if d.share_threshold && !is_wildcard {
                return Err(self.error(
                    &format!("{here}.share_threshold"),
                    format!(
                        "needs a wildcard value such as 'prefix*' (value is '{}')",
                        value.unwrap_or("")
                    ),
                ));
            }
            if d.metadata.is_some() {
                self.warn_once(
                    "metadata",
                    &format!("{here}.metadata"),
                    "accepted but not emitted: this service sends no dynamic metadata",
                );
            }
            let mut node = Node {
                limit: None,
                children: HashMap::new(),
                share_threshold: d.share_threshold,
                value_to_metric: d.value_to_metric,
            };
            if let Some(rl) = &d.rate_limit {
                node.limit = Some(Arc::new(self.limit(
                    rl,
                    d,
                    &format!("{here}.rate_limit"),
                    &my_path,
                )?));
            }
            self.descriptors(
                &mut node,
                &d.descriptors,
                &format!("{here}.descriptors"),
                &my_path,
            )?;
            let slot = parent.children.entry(d.key.clone()).or_default();
            match value {
                Some(v) if is_wildcard => slot.wildcards.push((Pattern::new(v), node)),
                Some(v) => {
                    slot.by_value.insert(v.to_string(), node);
                }
                None => slot.any_value = Some(node),
            }
        }
        Ok(())
    }

    fn limit(
        &mut self,
        rl: &RawRateLimit,
        d: &RawDescriptor,
        place: &str,
        path: &str,
    ) -> Result<Limit, ConfigError> {
        let unit = match (&rl.unit, rl.unlimited) {
            (Some(u), true) => {
                return Err(self.error(
                    &format!("{place}.unit"),
                    format!("must not be set when unlimited is true (found '{u}')"),
                ));
            }
            (None, true) => Unit::Second,
            (Some(u), false) => Unit::parse(u).ok_or_else(|| {
                self.error(
                    &format!("{place}.unit"),
                    format!("invalid unit '{u}' (expected second, minute, hour, day, week, month or year)"),
                )
            })?,
            (None, false) => {
                return Err(self.error(&format!("{place}.unit"), "missing (or set unlimited: true)".into()));
            }
        };
        let per_unit = match (rl.requests_per_unit, rl.budget, rl.unlimited) {
            (Some(_), Some(_), _) => {
                return Err(self.error(
                    &format!("{place}.budget"),
                    "set either requests_per_unit or budget, not both".into(),
                ));
            }
            (Some(n), None, _) => n,
            (None, Some(b), _) if !(b.is_finite() && b > 0.0 && b * MICROS < 9e15) => {
                return Err(self.error(
                    &format!("{place}.budget"),
                    format!("must be a positive amount of currency, got {b}"),
                ));
            }
            (None, Some(b), _) => (b * MICROS).round() as u64,
            (None, None, true) => 0,
            (None, None, false) => {
                return Err(self.error(
                    &format!("{place}.requests_per_unit"),
                    "missing (or set budget for a spend limit)".into(),
                ));
            }
        };
        let algorithm = match rl
            .algorithm
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            // A budget resets at the window's start (midnight UTC for a day), as billing does.
            None if rl.budget.is_some() => Algorithm::Fixed,
            None | Some("sliding") => Algorithm::Sliding,
            Some("fixed") => Algorithm::Fixed,
            Some(_) => {
                return Err(self.error(
                    &format!("{place}.algorithm"),
                    format!(
                        "invalid algorithm '{}' (expected sliding or fixed)",
                        rl.algorithm.as_deref().unwrap_or("")
                    ),
                ));
            }
        };
        let kind = match rl.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None if rl.budget.is_some() => Kind::Budget,
            Some("budget") if rl.budget.is_some() => Kind::Budget,
            Some("budget") => {
                return Err(self.error(
                    &format!("{place}.budget"),
                    "missing: a budget limit takes `budget: AMOUNT` (currency per unit)".into(),
                ));
            }
            _ if rl.budget.is_some() => {
                return Err(self.error(
                    &format!("{place}.kind"),
                    "must be budget (or left out) when budget is set".into(),
                ));
            }
            None | Some("requests") => Kind::Requests,
            Some("tokens") => Kind::Tokens,
            Some(_) => {
                return Err(self.error(
                    &format!("{place}.kind"),
                    format!(
                        "invalid kind '{}' (expected requests, tokens or budget)",
                        rl.kind.as_deref().unwrap_or("")
                    ),
                ));
            }
        };
        let name = rl.name.clone().filter(|n| !n.is_empty());
        if let Some(n) = &name
            && let Some(first) = self.names.insert(n.clone(), place.to_string())
        {
            return Err(self.error(
                &format!("{place}.name"),
                format!("duplicate limit name '{n}', already used at {first}"),
            ));
        }
        let mut replaces = Vec::new();
        for (j, r) in rl.replaces.iter().enumerate() {
            let here = format!("{place}.replaces[{j}].name");
            if r.name.is_empty() {
                return Err(self.error(&here, "must not be empty".into()));
            }
            if name.as_deref() == Some(r.name.as_str()) {
                return Err(self.error(
                    &here,
                    format!("a limit cannot replace itself ('{}')", r.name),
                ));
            }
            replaces.push(r.name.clone());
        }
        let mode = if d.shadow_mode {
            Mode::Shadow
        } else if d.quota_mode {
            Mode::Quota
        } else {
            Mode::Enforce
        };
        Ok(Limit {
            per_unit,
            unit,
            window: Window::new(unit.millis(), algorithm),
            kind,
            mode,
            unlimited: rl.unlimited,
            name,
            replaces,
            detailed_metric: d.detailed_metric,
            path: path.to_string(),
        })
    }
}
