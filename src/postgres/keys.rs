//! The cancel keys one proxy handed out ([`CancelKeys`]): (process id, minted key) → the server's
//! key, an entry per live session, removed with its [`KeyGuard`]. [`mint`] gives a client its
//! `BackendKeyData`; `super::cancel` looks a client's `CancelRequest` up here before anything is
//! opened. Why the proxy mints keys rather than handing the server's through: see `super::cancel`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rand::RngCore;

use super::proto::BackendKeyData;
use crate::proxy::shared::Shared;

/// The cancel keys handed out by one proxy: (process id, minted key) → the server's key.
#[derive(Default)]
pub(crate) struct CancelKeys {
    /// Live sessions' keys; an entry lives as long as its [`KeyGuard`].
    map: Mutex<HashMap<(u32, Bytes), Bytes>>,
}

impl CancelKeys {
    fn lock(&self) -> MutexGuard<'_, HashMap<(u32, Bytes), Bytes>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server's key for what a client presented, if a live session was given it.
    pub(crate) fn real_key(&self, process_id: u32, key: &[u8]) -> Option<Bytes> {
        self.lock()
            .get(&(process_id, Bytes::copy_from_slice(key)))
            .cloned()
    }

    /// How many sessions have a key now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One session's entry in [`CancelKeys`], removed when dropped (however the session ends).
pub(crate) struct KeyGuard {
    /// The proxy whose map holds the entry.
    inner: Arc<Shared>,
    /// The server's process id.
    process_id: u32,
    /// The key the client was given.
    minted: Bytes,
}

impl KeyGuard {
    /// The server's process id of the session.
    pub(crate) fn process_id(&self) -> u32 {
        self.process_id
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if let Some(keys) = self.inner.engine_state::<CancelKeys>() {
            keys.lock().remove(&(self.process_id, self.minted.clone()));
        }
    }
}

impl std::fmt::Debug for KeyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGuard")
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

/// The `BackendKeyData` for the client in place of the server's `real` one: the same process
/// id, a fresh random key of the same length, remembered until the guard is dropped.
pub(crate) fn mint(
    inner: &Arc<Shared>,
    real: BackendKeyData,
) -> (BackendKeyData, Option<KeyGuard>) {
    let Some(keys) = inner.engine_state::<CancelKeys>() else {
        // Not a PostgreSQL proxy's state: hand the real key through rather than fail the login.
        return (real, None);
    };
    let mut map = keys.lock();
    let minted = loop {
        let mut key = vec![0u8; real.secret_key.len()];
        rand::rng().fill_bytes(&mut key);
        let key = Bytes::from(key);
        // Never the server's own key, never a key already given for this process id.
        if key != real.secret_key && !map.contains_key(&(real.process_id, key.clone())) {
            break key;
        }
    };
    map.insert((real.process_id, minted.clone()), real.secret_key);
    drop(map);
    let guard = KeyGuard {
        inner: inner.clone(),
        process_id: real.process_id,
        minted: minted.clone(),
    };
    (
        BackendKeyData {
            process_id: real.process_id,
            secret_key: minted,
        },
        Some(guard),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::{AuthToken, Error as IamError, TokenRequest, TokenSource};
    use crate::proxy::config::{Engine, ProxyConfig};
    use crate::tunnel::Direct;
    use std::future::Future;
    use std::pin::Pin;

    struct NoTokens;
    impl TokenSource for NoTokens {
        fn token<'a>(
            &'a self,
            _req: &'a TokenRequest,
        ) -> Pin<Box<dyn Future<Output = Result<AuthToken, IamError>> + Send + 'a>> {
            Box::pin(async {
                Err(IamError::InvalidRequest {
                    reason: "no tokens in this test".into(),
                })
            })
        }
        fn invalidate(&self, _req: &TokenRequest) {}
    }

    fn shared() -> Arc<Shared> {
        let mut cfg = ProxyConfig::new("db.example", 5432, "us-east-1");
        cfg.engine = Engine::Postgres;
        Arc::new(
            Shared::new(
                cfg,
                Arc::new(Direct::new("127.0.0.1:9")),
                Arc::new(NoTokens),
            )
            .unwrap(),
        )
    }

    #[test]
    fn minted_keys_keep_the_pid_hide_the_key_and_die_with_the_session() {
        let inner = shared();
        let real = BackendKeyData {
            process_id: 4242,
            secret_key: Bytes::from_static(&[1, 2, 3, 4]),
        };
        let (given, guard) = mint(&inner, real.clone());
        let guard = guard.expect("a guard");
        assert_eq!(given.process_id, 4242);
        assert_eq!(given.secret_key.len(), 4);
        assert_ne!(given.secret_key, real.secret_key);
        let keys = inner.engine_state::<CancelKeys>().unwrap();
        assert_eq!(
            keys.real_key(4242, &given.secret_key),
            Some(real.secret_key.clone())
        );
        assert_eq!(
            keys.real_key(4242, &real.secret_key),
            None,
            "the real key is not a key"
        );
        assert_eq!(keys.real_key(4243, &given.secret_key), None);
        // Protocol 3.2's long keys keep their length.
        let long = BackendKeyData {
            process_id: 7,
            secret_key: Bytes::from(vec![9u8; 32]),
        };
        let (given_long, _g) = mint(&inner, long);
        assert_eq!(given_long.secret_key.len(), 32);
        assert_eq!(keys.len(), 2);
        drop(guard);
        assert_eq!(keys.real_key(4242, &given.secret_key), None);
        assert_eq!(keys.len(), 1);
        assert!(!format!("{_g:?}").contains("9, 9"), "no key in Debug");
    }
}
