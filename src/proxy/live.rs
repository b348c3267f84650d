//! What a reload changes in the proxy itself beside the origins' peers
//! (which their [`crate::pool::Origin`]s carry): the number of retries.
//! Requests read it per attempt.

use std::sync::atomic::{AtomicU32, Ordering};

pub struct LiveSettings {
    /// Extra attempts on another origin.
    retries: AtomicU32,
}

impl LiveSettings {
    pub fn new(retries: u32) -> Self {
        LiveSettings {
            retries: AtomicU32::new(retries),
        }
    }

    /// A reload's `retries`.
    pub fn set_retries(&self, retries: u32) {
        self.retries.store(retries, Ordering::Release);
    }

    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Acquire)
    }
}
