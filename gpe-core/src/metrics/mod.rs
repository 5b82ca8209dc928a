//! The metric types a process records with, each value a slot of the [`Store`](crate::Store):
//! [`Counter`], [`Gauge`], [`Histogram`] and their labelled `Vec`s, and [`adopt`] to carry the
//! metrics of an existing `prometheus` registry into the store.

pub mod adopt;
mod counter;
mod gauge;
mod histogram;
mod vec;

pub use counter::{Counter, CounterVec};
pub use gauge::{Gauge, GaugeVec};
pub use histogram::{Histogram, HistogramVec};
