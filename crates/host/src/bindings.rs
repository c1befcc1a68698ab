//! Host-side bindings generated from the WIT under `wit/`.

/// The Spin interfaces components import: Postgres, Redis and variables.
pub mod spin {
    wasmtime::component::bindgen!({
        path: "../../wit",
        interfaces: "
            import spin:postgres/postgres@4.0.0;
            import fermyon:spin/redis@2.0.0;
            import fermyon:spin/variables@2.0.0;
        ",
        imports: { default: async | trappable },
        with: {
            "spin:postgres/postgres.connection": crate::pg::PgConnection,
            "fermyon:spin/redis.connection": crate::redis_host::RedisConnection,
        },
    });
}

/// The cron trigger plugin's world (`fermyon:spin-cron@2.0.0`).
pub mod cron {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "fermyon:spin-cron/spin-cron",
        exports: { default: async },
    });
}
