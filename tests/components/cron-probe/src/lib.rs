//! Counts cron events: `INCR cron-probe:fired` and remembers the last timestamp.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "fermyon:spin-cron/spin-cron",
});

use spin_sdk::redis::{Connection, RedisParameter};

struct CronProbe;

impl Guest for CronProbe {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let fail = |e: spin_sdk::redis::Error| Error::Other(e.to_string());
        let url = spin_sdk::variables::get("redis_url").map_err(|e| Error::Other(e.to_string()))?;
        let redis = Connection::open(&url).map_err(fail)?;
        redis.incr("cron-probe:fired").map_err(fail)?;
        redis
            .execute(
                "SET",
                &[
                    RedisParameter::Binary(b"cron-probe:timestamp".to_vec()),
                    RedisParameter::Int64(metadata.timestamp as i64),
                ],
            )
            .map_err(fail)?;
        Ok(())
    }
}

export!(CronProbe);
