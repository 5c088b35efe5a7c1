//! A value swapped whole while readers keep the one they took: the configuration pieces a
//! reload changes. A leaf module, so the HTTP layer and auth can hold one without depending on
//! the reload logic that fills it.

use std::sync::{Arc, RwLock};

/// A value that can be swapped while readers hold the one they took.
#[derive(Debug)]
pub struct Live<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The current value; a later [`Live::set`] does not change what this returned.
    pub fn get(&self) -> Arc<T> {
        // A writer cannot panic while holding the lock (it only swaps an Arc), so a poisoned
        // lock still holds a whole value.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, value: Arc<T>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}
