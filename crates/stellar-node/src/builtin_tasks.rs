//! Tasks the bundled `stellar` binary defines, for operators and tests.

use std::time::Duration;

use serde::Deserialize;
use stellar_tasks::TaskDefinition;
use tracing::{debug, info, warn};

#[derive(Debug, Deserialize)]
struct SleepArgs {
    ms: u64,
}

#[derive(Debug, Deserialize)]
struct LogArgs {
    message: String,
    /// Work for this long between "started" and "ran".
    #[serde(default)]
    ms: u64,
}

#[derive(Debug, Default, Deserialize)]
struct FailArgs {
    #[serde(default)]
    message: Option<String>,
}

/// The built-in task types: `stellar.sleep {"ms": N}` (reports its progress in up to ten steps), `stellar.log {"message": "…", "ms"?: N}` (logs when it starts and when
/// it ends), `stellar.fail {"message"?: "…"}`.
pub fn definitions() -> Vec<TaskDefinition> {
    vec![
        TaskDefinition::new("stellar.sleep", |ctx, args: SleepArgs| async move {
            // In up to ten steps of at least 100 ms, reporting the percentage done after each.
            let steps = (args.ms / 100).clamp(1, 10);
            for step in 1..=steps {
                tokio::time::sleep(Duration::from_millis(args.ms / steps)).await;
                let percent = step * 100 / steps;
                if let Err(err) = ctx.progress(&percent).await {
                    debug!(task_id = %ctx.id, error = %err, "could not record progress");
                }
            }
            Ok(())
        }),
        TaskDefinition::new("stellar.log", |ctx, args: LogArgs| async move {
            info!(node_id = %ctx.node_id, task_id = %ctx.id, attempt = ctx.attempt, text = %args.message, "stellar.log task started");
            tokio::time::sleep(Duration::from_millis(args.ms)).await;
            info!(node_id = %ctx.node_id, task_id = %ctx.id, attempt = ctx.attempt, text = %args.message, "stellar.log task ran");
            Ok(())
        }),
        TaskDefinition::new("stellar.fail", |ctx, args: Option<FailArgs>| async move {
            let message = args.unwrap_or_default().message.unwrap_or_else(|| "stellar.fail always fails".to_owned());
            warn!(node_id = %ctx.node_id, task_id = %ctx.id, attempt = ctx.attempt, "stellar.fail task failing on purpose");
            Err(message.into())
        })
        .max_attempts(3)
        .backoff(Duration::from_millis(100), Duration::from_secs(1)),
    ]
}
