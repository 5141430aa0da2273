//! Records, the expiry index and upload leases in Redis, shared by every tusk instance.
//!
//! Keys (all under `redis.key_prefix`): `uploads` (hash: upload id -> record JSON), `expiry`
//! (sorted set: upload id scored by `expires_at`), `lock:{id}` (string: the holder token, with
//! a TTL). Requests to stop a holder travel on the channel `release` as `if-stalled {id}` or
//! `always {id}`; every instance listens and applies them to its own lock table.
//!
//! Redis is the index, not the only copy: the object store keeps each upload's record and its
//! bytes, so a flushed Redis loses no acknowledged byte (see `AppState::load`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::lock::{SharedLocks, StopRequest, UploadLocks};
use super::{SessionError, SessionStore};
use crate::config::RedisSettings;
use crate::upload::{UploadId, UploadInfo};

/// How long one Redis command may take before the store counts as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

impl From<redis::RedisError> for SessionError {
    fn from(err: redis::RedisError) -> Self {
        SessionError::Unavailable(err.to_string())
    }
}

/// One connection (multiplexed, reconnecting) and the key names.
#[derive(Clone)]
struct Redis {
    connection: ConnectionManager,
    prefix: Arc<str>,
}

impl Redis {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn lock_key(&self, id: &UploadId) -> String {
        format!("{}lock:{id}", self.prefix)
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

/// Connect to the Redis of `settings`; fails when it cannot be reached now.
///
/// # Errors
/// When the URL is invalid or Redis does not answer.
pub async fn connect(
    settings: &RedisSettings,
) -> Result<(RedisSessionStore, RedisLocks), SessionError> {
    let client = redis::Client::open(settings.url.as_str())
        .map_err(|e| SessionError::Database(format!("redis.url: {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    let connection = client.get_connection_manager_with_config(config).await?;
    let redis = Redis {
        connection,
        prefix: Arc::from(settings.key_prefix.as_str()),
    };
    let store = RedisSessionStore {
        redis: redis.clone(),
    };
    let locks = RedisLocks {
        redis,
        client,
        lease: settings.lock_ttl.0,
    };
    Ok((store, locks))
}

/// [`SessionStore`] on Redis.
#[derive(Clone)]
pub struct RedisSessionStore {
    redis: Redis,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.redis.prefix)
            .finish_non_exhaustive()
    }
}

fn decode(id: &str, json: &str) -> Result<UploadInfo, SessionError> {
    serde_json::from_str(json).map_err(|e| SessionError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn get(&self, id: &UploadId) -> Result<Option<UploadInfo>, SessionError> {
        let json: Option<String> = self
            .redis
            .connection()
            .hget(self.redis.key("uploads"), id.as_str())
            .await?;
        json.map(|json| decode(id.as_str(), &json)).transpose()
    }

    async fn put(&self, info: &UploadInfo) -> Result<(), SessionError> {
        let json = serde_json::to_string(info).map_err(|e| SessionError::Corrupt {
            id: info.id.to_string(),
            message: e.to_string(),
        })?;
        let (uploads, expiry) = (self.redis.key("uploads"), self.redis.key("expiry"));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&uploads, info.id.as_str(), json)
            .ignore();
        match info.expires_at {
            Some(at) if !info.is_finished() => pipe.zadd(&expiry, info.id.as_str(), at).ignore(),
            _ => pipe.zrem(&expiry, info.id.as_str()).ignore(),
        };
        let () = pipe.query_async(&mut self.redis.connection()).await?;
        Ok(())
    }

    async fn put_lazy(&self, info: &UploadInfo) -> Result<(), SessionError> {
        self.put(info).await
    }

    async fn remove(&self, id: &UploadId) -> Result<(), SessionError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(self.redis.key("uploads"), id.as_str())
            .ignore()
            .zrem(self.redis.key("expiry"), id.as_str())
            .ignore();
        let () = pipe.query_async(&mut self.redis.connection()).await?;
        Ok(())
    }

    async fn all(&self) -> Result<Vec<UploadInfo>, SessionError> {
        let records: Vec<(String, String)> = self
            .redis
            .connection()
            .hgetall(self.redis.key("uploads"))
            .await?;
        records.iter().map(|(id, json)| decode(id, json)).collect()
    }

    async fn expired(&self, now: u64) -> Result<Vec<UploadInfo>, SessionError> {
        let ids: Vec<String> = self
            .redis
            .connection()
            .zrangebyscore(self.redis.key("expiry"), 0, now)
            .await?;
        let mut expired = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(id) = UploadId::try_from(id) else {
                continue;
            };
            if let Some(info) = self.get(&id).await? {
                expired.push(info);
            }
        }
        Ok(expired)
    }

    async fn flush(&self) -> Result<(), SessionError> {
        // Redis persists on its own schedule (its appendfsync setting); the bytes' copy of each
        // record in the object store is what survives losing it. What is left to check is that
        // Redis answers (readiness).
        let _: String = redis::cmd("PING")
            .query_async(&mut self.redis.connection())
            .await?;
        Ok(())
    }

    async fn size_on_disk(&self) -> Result<u64, SessionError> {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(self.redis.key("uploads"))
            .query_async(&mut self.redis.connection())
            .await?;
        Ok(bytes.unwrap_or(0))
    }
}

/// Extend the lease if it is ours; take it again if it vanished (a flushed Redis).
const RENEW: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Delete the lease only if it is ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Upload leases in Redis ([`SharedLocks`]).
#[derive(Clone)]
pub struct RedisLocks {
    redis: Redis,
    client: redis::Client,
    lease: Duration,
}

impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocks")
            .field("prefix", &self.redis.prefix)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl RedisLocks {
    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Listen for stop requests from other instances and apply them to `locks` until `stop`;
    /// reconnects (with a pause) whenever the subscription breaks.
    pub fn listen(
        &self,
        locks: UploadLocks,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (client, channel) = (self.client.clone(), self.redis.key("release"));
        tokio::spawn(async move {
            loop {
                let listening = listen_once(&client, &channel, &locks);
                tokio::select! {
                    () = stop.cancelled() => return,
                    result = listening => {
                        if let Err(err) = result {
                            tracing::warn!(error = %err, "lost the Redis release channel; reconnecting");
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
    }
}

async fn listen_once(
    client: &redis::Client,
    channel: &str,
    locks: &UploadLocks,
) -> Result<(), redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        let Some((kind, id)) = payload.split_once(' ') else {
            continue;
        };
        let (Ok(id), Some(request)) = (UploadId::try_from(id.to_owned()), parse_request(kind))
        else {
            continue;
        };
        locks.on_remote_request(&id, request);
    }
    Ok(())
}

fn request_name(request: StopRequest) -> &'static str {
    match request {
        StopRequest::IfStalled => "if-stalled",
        StopRequest::Always => "always",
    }
}

fn parse_request(name: &str) -> Option<StopRequest> {
    [StopRequest::IfStalled, StopRequest::Always]
        .into_iter()
        .find(|r| request_name(*r) == name)
}

#[async_trait]
impl SharedLocks for RedisLocks {
    async fn acquire(&self, id: &UploadId, holder: &str) -> Result<bool, SessionError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.redis.lock_key(id))
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms())
            .query_async(&mut self.redis.connection())
            .await?;
        Ok(taken.is_some())
    }

    async fn renew(&self, id: &UploadId, holder: &str) -> Result<bool, SessionError> {
        let renewed: i64 = redis::Script::new(RENEW)
            .key(self.redis.lock_key(id))
            .arg(holder)
            .arg(self.lease_ms())
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, id: &UploadId, holder: &str) -> Result<(), SessionError> {
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.redis.lock_key(id))
            .arg(holder)
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(())
    }

    async fn is_held(&self, id: &UploadId) -> Result<bool, SessionError> {
        Ok(self
            .redis
            .connection()
            .exists(self.redis.lock_key(id))
            .await?)
    }

    async fn ask_holder(&self, id: &UploadId, request: StopRequest) -> Result<(), SessionError> {
        let message = format!("{} {id}", request_name(request));
        let _: i64 = self
            .redis
            .connection()
            .publish(self.redis.key("release"), message)
            .await?;
        Ok(())
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::lock::LockError;
    use crate::upload::{Concat, UploadState};

    /// A throw-away `redis-server` on a free port; `None` (test skipped) when Redis is not
    /// installed, except under CI where that is a failure.
    struct TestRedis {
        child: std::process::Child,
        port: u16,
    }

    impl TestRedis {
        fn start() -> Option<TestRedis> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap();
            let spawned = std::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--port")
                .arg(port.to_string())
                .stdout(std::process::Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    assert!(std::env::var_os("CI").is_none(), "redis-server: {e}");
                    println!("skipped: redis-server not installed ({e})");
                    return None;
                }
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(TestRedis { child, port })
        }

        fn settings(&self) -> RedisSettings {
            RedisSettings {
                url: format!("redis://127.0.0.1:{}/0", self.port),
                key_prefix: "test:".to_owned(),
                lock_ttl: crate::config::HumanDuration(Duration::from_secs(1)),
            }
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Two "instances": each its own lock table over the same Redis, listening.
    async fn two_instances(redis: &TestRedis) -> (UploadLocks, UploadLocks, RedisLocks) {
        let mut tables = Vec::new();
        let mut last = None;
        for _ in 0..2 {
            let (_, shared) = connect(&redis.settings()).await.unwrap();
            let locks = UploadLocks::with_shared(Arc::new(shared.clone()));
            shared.listen(locks.clone(), CancellationToken::new());
            tables.push(locks);
            last = Some(shared);
        }
        // Let both subscriptions reach Redis before anyone publishes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b = tables.pop().unwrap();
        (tables.pop().unwrap(), b, last.unwrap())
    }

    fn record(expires_at: u64) -> UploadInfo {
        UploadInfo {
            id: UploadId::random(),
            length: Some(10),
            offset: 3,
            metadata: String::new(),
            created_at: 1,
            expires_at: Some(expires_at),
            concat: Concat::None,
            state: UploadState::Uploading,
            owner: Some("alice".to_owned()),
        }
    }

    #[tokio::test]
    async fn records_round_trip_and_the_expiry_index_finds_only_expired_ones() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (store, _) = connect(&redis.settings()).await.unwrap();
        let (old, fresh) = (record(100), record(300));
        store.put(&old).await.unwrap();
        store.put(&fresh).await.unwrap();
        assert_eq!(store.get(&old.id).await.unwrap(), Some(old.clone()));
        assert_eq!(store.all().await.unwrap().len(), 2);
        assert_eq!(store.expired(200).await.unwrap(), vec![old.clone()]);
        store.remove(&old.id).await.unwrap();
        assert_eq!(store.get(&old.id).await.unwrap(), None);
        assert!(store.expired(1000).await.unwrap() == vec![fresh]);
    }

    #[tokio::test]
    async fn a_lease_is_exclusive_across_instances() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b, _) = two_instances(&redis).await;
        let id = UploadId::random();
        let held = a.try_lock(&id).await.unwrap();
        assert!(matches!(b.try_lock(&id).await, Err(LockError::Busy(_))));
        drop(held);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if b.try_lock(&id).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lease was never released"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_stalled_holder_on_one_instance_is_taken_over_from_another() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b, _) = two_instances(&redis).await;
        let id = UploadId::random();
        let held = a.try_lock(&id).await.unwrap();
        let stop = held.stop_requested();
        // The holder commits and lets go when asked, as the PATCH path does.
        tokio::spawn(async move {
            stop.cancelled().await;
            drop(held);
        });
        let began = tokio::time::Instant::now();
        let guard = b
            .lock_with_takeover(&id, Duration::from_secs(5))
            .await
            .expect("B takes the stalled upload over");
        // Silent 500 ms counts as stalled; the rest is pub/sub and Redis round trips.
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        guard.confirm().await.unwrap();
    }

    #[tokio::test]
    async fn a_live_holder_elsewhere_is_not_stopped() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b, _) = two_instances(&redis).await;
        let id = UploadId::random();
        let held = a.try_lock(&id).await.unwrap();
        let beat = held.heartbeat().clone();
        let beating = tokio::spawn(async move {
            loop {
                beat.beat();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let refused = b.lock_with_takeover(&id, Duration::from_millis(1500)).await;
        assert!(matches!(refused, Err(LockError::Busy(_))));
        assert!(
            !held.stop_requested().is_cancelled(),
            "a live holder was stopped"
        );
        beating.abort();
    }

    #[tokio::test]
    async fn a_holder_whose_lease_was_taken_stops_and_cannot_confirm() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, _b, shared) = two_instances(&redis).await;
        let id = UploadId::random();
        let held = a.try_lock(&id).await.unwrap();
        // Someone else's token in the lease (what an expired lease retaken elsewhere is).
        let _: () = redis::cmd("SET")
            .arg(shared.redis.lock_key(&id))
            .arg("someone-else")
            .query_async(&mut shared.redis.connection())
            .await
            .unwrap();
        assert!(matches!(held.confirm().await, Err(LockError::Busy(_))));
        // The renewer notices within a third of the lease and stops the holder.
        tokio::time::timeout(Duration::from_secs(2), held.stop_requested().cancelled())
            .await
            .expect("the holder was told to stop");
    }

    #[tokio::test]
    async fn a_flushed_lease_is_taken_again_by_its_holder() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b, shared) = two_instances(&redis).await;
        let id = UploadId::random();
        let held = a.try_lock(&id).await.unwrap();
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut shared.redis.connection())
            .await
            .unwrap();
        held.confirm()
            .await
            .expect("the holder takes its lease again");
        assert!(matches!(b.try_lock(&id).await, Err(LockError::Busy(_))));
    }
}
