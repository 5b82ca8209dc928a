//! Gauge multiprocess modes.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How the gauge values of several processes are combined into one exposition.
///
/// The same modes, with the same names, as Python `prometheus_client`'s multiprocess mode. The
/// `live*` modes only count processes that are alive.
///
/// ```
/// use gpe_core::GaugeMode;
/// assert_eq!("livesum".parse::<GaugeMode>().unwrap(), GaugeMode::LiveSum);
/// assert!("median".parse::<GaugeMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GaugeMode {
    /// One series per process, with a `pid` label (Python's default).
    #[default]
    All,
    /// As `All`, living processes only.
    LiveAll,
    /// The smallest value across processes.
    Min,
    /// The largest value across processes.
    Max,
    /// The sum across processes.
    Sum,
    /// The most recently set value across processes.
    MostRecent,
    /// As `Min`, living processes only.
    LiveMin,
    /// As `Max`, living processes only.
    LiveMax,
    /// As `Sum`, living processes only.
    LiveSum,
    /// As `MostRecent`, living processes only.
    LiveMostRecent,
}

impl GaugeMode {
    /// Every mode.
    pub const ALL_MODES: [GaugeMode; 10] = [
        GaugeMode::All,
        GaugeMode::LiveAll,
        GaugeMode::Min,
        GaugeMode::Max,
        GaugeMode::Sum,
        GaugeMode::MostRecent,
        GaugeMode::LiveMin,
        GaugeMode::LiveMax,
        GaugeMode::LiveSum,
        GaugeMode::LiveMostRecent,
    ];

    /// The name used in file names (`gauge_{name}_{pid}.db`).
    pub fn as_str(self) -> &'static str {
        match self {
            GaugeMode::All => "all",
            GaugeMode::LiveAll => "liveall",
            GaugeMode::Min => "min",
            GaugeMode::Max => "max",
            GaugeMode::Sum => "sum",
            GaugeMode::MostRecent => "mostrecent",
            GaugeMode::LiveMin => "livemin",
            GaugeMode::LiveMax => "livemax",
            GaugeMode::LiveSum => "livesum",
            GaugeMode::LiveMostRecent => "livemostrecent",
        }
    }

    /// Whether only living processes count.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            GaugeMode::LiveAll
                | GaugeMode::LiveMin
                | GaugeMode::LiveMax
                | GaugeMode::LiveSum
                | GaugeMode::LiveMostRecent
        )
    }

    /// Whether the series keep a `pid` label (`all`, `liveall`).
    pub fn per_process(self) -> bool {
        matches!(self, GaugeMode::All | GaugeMode::LiveAll)
    }

    /// Whether `set` records a timestamp (the most-recent modes).
    pub fn is_most_recent(self) -> bool {
        matches!(self, GaugeMode::MostRecent | GaugeMode::LiveMostRecent)
    }

    /// The non-live mode with the same combining rule.
    pub(crate) fn combining(self) -> GaugeMode {
        match self {
            GaugeMode::LiveAll => GaugeMode::All,
            GaugeMode::LiveMin => GaugeMode::Min,
            GaugeMode::LiveMax => GaugeMode::Max,
            GaugeMode::LiveSum => GaugeMode::Sum,
            GaugeMode::LiveMostRecent => GaugeMode::MostRecent,
            other => other,
        }
    }
}

impl fmt::Display for GaugeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GaugeMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GaugeMode::ALL_MODES
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::UnknownGaugeMode(s.to_owned()))
    }
}
