//! The time deposits are judged by. Production reads the system clock; tests move a manual
//! clock forward to expire transfers without sleeping.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

/// Microseconds since the Unix epoch.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(invest_proto::time::now_micros))
    }

    /// A clock that only moves when told, starting at `start`.
    pub fn manual(start: i64) -> (Self, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(start));
        let read = now.clone();
        (Self(Arc::new(move || read.load(Ordering::SeqCst))), now)
    }

    /// Now.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", invest_proto::time::rfc3339(self.now()))
    }
}
