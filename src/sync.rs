//! A lock that shrugs off poisoning. Every mutex in quiesce guards data that stays consistent
//! whatever panicked while it was held (a flag, a list, an answer being replaced whole), so a
//! panic on one thread must not turn into panics on the others.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
