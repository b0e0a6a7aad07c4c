//! Poison-tolerant locking of the standard library's locks.
//!
//! A lock is poisoned when a thread panicked while holding it. Every lock in this workspace
//! guards state that each critical section leaves consistent (one map update, one counter), so a
//! panic elsewhere does not make the data wrong: these helpers take the guard anyway instead of
//! spreading the panic.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, even if a panic poisoned it.
///
/// ```
/// use std::sync::Mutex;
///
/// let counter = Mutex::new(1);
/// *stellar_core::sync::lock(&counter) += 1;
/// assert_eq!(*stellar_core::sync::lock(&counter), 2);
/// ```
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a read lock of `lock`, even if a panic poisoned it.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the write lock of `lock`, even if a panic poisoned it.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let shared = Arc::new((Mutex::new(1), RwLock::new(1)));
        let poisoner = shared.clone();
        let panicked = std::thread::spawn(move || {
            let _mutex = poisoner.0.lock().expect("first lock");
            let _rwlock = poisoner.1.write().expect("first lock");
            panic!("poison both");
        })
        .join();
        assert!(panicked.is_err());
        assert!(shared.0.is_poisoned() && shared.1.is_poisoned());
        *lock(&shared.0) += 1;
        *write(&shared.1) += 1;
        assert_eq!((*lock(&shared.0), *read(&shared.1)), (2, 2));
    }
}
