//! The Python rules that add up one series across processes.
