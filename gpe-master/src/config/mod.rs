//! Config files: gunicorn's `gunicorn.conf.py` (run by `python3`, so that expressions such as
//! `multiprocessing.cpu_count() * 2 + 1` work) and gpe's own TOML (for images without Python),
//! both turned into command-line words that go in front of `GUNICORN_CMD_ARGS` and the command
//! line, so that the order is gunicorn's: command line > `GUNICORN_CMD_ARGS` > config file.
//!
//! Both name settings as gunicorn does (`workers`, `bind`, `max_requests`, …); gpe adds
//! `command`, the worker binary and its arguments, used when the command line names none:
//!
//! ```toml
//! workers = 4
//! bind = ["127.0.0.1:8000", "unix:/run/app.sock"]
//! max_requests = 1000
//! command = ["/usr/local/bin/my-service", "--its-own-flag"]
//! ```

pub(crate) mod settings;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use settings::{Kind, Use};

/// The config file gunicorn loads when no `-c` names one.
pub(crate) const DEFAULT_FILE: &str = "gunicorn.conf.py";

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{file}: reading a Python config file needs python3, which was not found ({source}); install python3, or write the settings as TOML (gpe-master -c FILE.toml)", file = .file.display())]
    NoPython {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: python3 could not run it:\n{stderr}", file = .file.display())]
    Python { file: PathBuf, stderr: String },
    #[error("{file}: {source}", file = .file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {message}", file = .file.display())]
    Toml { file: PathBuf, message: String },
    #[error("{file}: unknown setting `{name}`: gpe's TOML takes gunicorn's setting names and `command` (gpe-master --print-config prints them)", file = .file.display())]
    Unknown { file: PathBuf, name: String },
    #[error("{file}: setting `{setting}`: {reason}", file = .file.display())]
    Value {
        file: PathBuf,
        setting: String,
        reason: String,
    },
}

/// What a config file says, as command-line words.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FileConfig {
    /// The file.
    pub(crate) file: PathBuf,
    /// `--workers=4`, `--bind=…`, …: the settings gpe-master applies.
    pub(crate) words: Vec<String>,
    /// The worker binary and its arguments (gpe's `command`), if set.
    pub(crate) command: Option<Vec<String>>,
    /// Settings it sets that gpe-master does not apply (worker-side, unsupported, hooks).
    pub(crate) ignored: Vec<(&'static str, Use)>,
}

/// Read `file`: TOML when its name ends in `.toml`, else Python.
pub(crate) fn load(file: &Path) -> Result<FileConfig, ConfigError> {
    let is_toml = file.extension().is_some_and(|e| e == "toml");
    let values = if is_toml {
        read_toml(file)?
    } else {
        read_python(file)?
    };
    from_values(file, values, is_toml)
}

fn read_toml(file: &Path) -> Result<Vec<(String, Value)>, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Toml {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    table
        .into_iter()
        .map(|(k, v)| {
            let v = serde_json::to_value(v).map_err(|e| ConfigError::Value {
                file: file.to_owned(),
                setting: k.clone(),
                reason: e.to_string(),
            })?;
            Ok((k, v))
        })
        .collect()
}

/// Runs the file as gunicorn does (`exec` of its code as a module), then prints the values of
/// the names that are settings (and `command`) as JSON; a callable (a hook) prints as `true`.
const PYTHON_READER: &str = r#"
import json, sys, types
path, names = sys.argv[1], set(sys.argv[2].split(","))
module = types.ModuleType("__config__")
module.__file__ = path
with open(path, "rb") as f:
    code = compile(f.read(), path, "exec")
exec(code, module.__dict__)
out = {}
for k, v in vars(module).items():
    if k in names:
        out[k] = True if callable(v) else v
json.dump(out, sys.stdout, default=str)
"#;

fn read_python(file: &Path) -> Result<Vec<(String, Value)>, ConfigError> {
    let names: Vec<&str> = settings::SETTINGS
        .iter()
        .map(|s| s.name)
        .chain(["command"])
        .collect();
    let out = Command::new("python3")
        .args(["-c", PYTHON_READER])
        .arg(file)
        .arg(names.join(","))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ConfigError::NoPython {
            file: file.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(ConfigError::Python {
            file: file.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
        });
    }
    let map: serde_json::Map<String, Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| ConfigError::Python {
            file: file.to_owned(),
            stderr: format!("unexpected output ({e})"),
        })?;
    Ok(map.into_iter().collect())
}

/// A scalar as a flag value (`4`, `0.5`, `"text"`), or why not.
fn scalar(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(match n.as_f64() {
            // 30.0 is 30 (gunicorn's int()).
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 && !n.is_i64() && !n.is_u64() => {
                format!("{f:.0}")
            }
            _ => n.to_string(),
        }),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("no value (None)".to_owned()),
        Value::Array(_) | Value::Object(_) => Err(format!("expected one value, got {v}")),
    }
}

/// The settings of a file as command-line words (pure: tested without files).
pub(crate) fn from_values(
    file: &Path,
    values: Vec<(String, Value)>,
    strict: bool,
) -> Result<FileConfig, ConfigError> {
    let bad = |setting: &str, reason: String| ConfigError::Value {
        file: file.to_owned(),
        setting: setting.to_owned(),
        reason,
    };
    let mut config = FileConfig {
        file: file.to_owned(),
        ..FileConfig::default()
    };
    for (name, value) in values {
        if name == "command" {
            config.command = Some(match &value {
                Value::String(s) => shlex::split(s)
                    .filter(|w| !w.is_empty())
                    .ok_or_else(|| bad(&name, "not valid shell words".to_owned()))?,
                Value::Array(items) => items
                    .iter()
                    .map(scalar)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&name, e))?,
                other => return Err(bad(&name, format!("expected a list of words, got {other}"))),
            });
            continue;
        }
        let Some(setting) = settings::by_name(&name) else {
            if strict {
                return Err(ConfigError::Unknown {
                    file: file.to_owned(),
                    name,
                });
            }
            continue;
        };
        if setting.used != Use::Master {
            config.ignored.push((setting.name, setting.used));
            continue;
        }
        // `config` in a config file names no other file (as in gunicorn).
        let Some(long) = setting.long().filter(|_| setting.name != "config") else {
            continue;
        };
        match setting.kind {
            Kind::Flag => {
                let on = match &value {
                    Value::Bool(b) => *b,
                    Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                    Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                    other => {
                        return Err(bad(&name, format!("expected true or false, got {other}")))
                    }
                };
                if on {
                    config.words.push(long.to_owned());
                }
            }
            Kind::Value => {
                let v = scalar(&value).map_err(|e| bad(&name, e))?;
                config.words.push(format!("{long}={v}"));
            }
            Kind::List => {
                let items = match &value {
                    // gunicorn also takes one string, and a comma-separated one for bind.
                    Value::String(s) if setting.name == "bind" => {
                        s.split(',').map(|p| p.trim().to_owned()).collect()
                    }
                    Value::Array(items) => items
                        .iter()
                        .map(scalar)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| bad(&name, e))?,
                    other => vec![scalar(other).map_err(|e| bad(&name, e))?],
                };
                config
                    .words
                    .extend(items.into_iter().map(|v| format!("{long}={v}")));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: Value) -> Vec<(String, Value)> {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    #[test]
    fn settings_become_flags() {
        let c = from_values(
            Path::new("g.py"),
            values(json!({
                "workers": 5,
                "timeout": 60.0,
                "bind": ["127.0.0.1:1", "unix:/s"],
                "raw_env": ["A=1"],
                "daemon": false,
                "reuse_port": true,
                "loglevel": "DEBUG",
                "threads": 4,
                "post_fork": true,
                "statsd_host": "x:1",
                "config": "other.py",
                "command": ["./bin", "--x"],
                "helper_variable": 3,
            })),
            false,
        )
        .unwrap();
        let mut words = c.words.clone();
        words.sort();
        assert_eq!(
            words,
            [
                "--bind=127.0.0.1:1",
                "--bind=unix:/s",
                "--env=A=1",
                "--log-level=DEBUG",
                "--reuse-port",
                "--timeout=60",
                "--workers=5",
            ]
        );
        assert_eq!(c.command, Some(vec!["./bin".to_owned(), "--x".to_owned()]));
        let mut ignored = c.ignored.clone();
        ignored.sort_by_key(|(n, _)| *n);
        assert_eq!(
            ignored,
            [
                ("post_fork", Use::Hook),
                ("statsd_host", Use::Unsupported),
                ("threads", Use::Worker)
            ]
        );
    }

    #[test]
    fn a_comma_separated_bind_is_a_list() {
        let c = from_values(
            Path::new("g.toml"),
            values(json!({"bind": "127.0.0.1:1, 127.0.0.1:2"})),
            true,
        )
        .unwrap();
        assert_eq!(c.words, ["--bind=127.0.0.1:1", "--bind=127.0.0.1:2"]);
        // A TOML file is gpe's own: a name that is no setting is a mistake.
        let e = from_values(Path::new("g.toml"), values(json!({"wokers": 3})), true).unwrap_err();
        assert!(e.to_string().contains("unknown setting `wokers`"), "{e}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (v, want) in [
            (
                json!({"workers": [1, 2]}),
                "setting `workers`: expected one value",
            ),
            (
                json!({"daemon": 3}),
                "setting `daemon`: expected true or false",
            ),
            (json!({"timeout": null}), "setting `timeout`: no value"),
            (
                json!({"command": 3}),
                "setting `command`: expected a list of words",
            ),
        ] {
            let e = from_values(Path::new("g.toml"), values(v), true).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(e.to_string().starts_with("g.toml: "), "{e}");
        }
    }
}
