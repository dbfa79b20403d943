//! Putting Ferry's schema and capture on the nodes (`ferry init`, and at
//! every start), refusing when the replicated tables differ.

use super::cluster::decide;
use super::AppError;
use crate::config::Config;
use ferry_batcher::install::{connect, install_master, install_node, prepare_replica};
use ferry_batcher::pattern::Pattern;
use ferry_batcher::BatchError;
use ferry_cluster::Topology;
use tracing::warn;

/// Include and exclude patterns.
pub fn patterns(cfg: &Config) -> Result<(Vec<Pattern>, Vec<Pattern>), AppError> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(AppError::from)
    };
    Ok((
        parse(&cfg.replication.tables)?,
        parse(&cfg.replication.exclude)?,
    ))
}

/// Installs schema and capture on the master and every reachable replica,
/// refusing when the replicated tables differ. With `require_all`, an
/// unreachable node is an error (for `ferry init`); otherwise it is logged
/// and the batcher prepares it when it returns.
pub async fn install(cfg: &Config, require_all: bool) -> Result<usize, AppError> {
    let topo = decide(cfg).await?;
    if let Some(why) = &topo.waiting {
        return Err(AppError::Config(format!("no master: {why}")));
    }
    install_for(cfg, &topo, require_all).await
}

/// [`install`] for a given topology.
pub(super) async fn install_for(
    cfg: &Config,
    topo: &Topology,
    require_all: bool,
) -> Result<usize, AppError> {
    let (include, exclude) = patterns(cfg)?;
    let m = &topo.master;
    let master = connect(&m.name, &m.target, "ferry init").await?;
    // Every node at once, each its own server: the master's capture and
    // each replica's own, then the replicas are checked against the
    // master's tables (their capture is current by then).
    let (shapes, installed) = tokio::join!(
        install_master(&m.name, &master, &include, &exclude),
        futures_util::future::join_all(topo.replicas.iter().map(|r| async {
            let client = connect(&r.name, &r.target, "ferry init").await?;
            install_node(&r.name, &client, &include, &exclude).await?;
            Ok::<_, BatchError>(client)
        })),
    );
    let shapes = shapes?;
    let prepared =
        futures_util::future::join_all(topo.replicas.iter().zip(installed).map(|(r, client)| {
            let (master, shapes) = (&master, &shapes);
            let (include, exclude) = (&include, &exclude);
            async move {
                let client = client?;
                prepare_replica(
                    (&m.name, master),
                    shapes,
                    (&r.name, &client),
                    include,
                    exclude,
                )
                .await
            }
        }))
        .await;
    for (r, result) in topo.replicas.iter().zip(prepared) {
        match result {
            Ok(_) => {}
            Err(e @ BatchError::SchemaMismatch(_)) => return Err(e.into()),
            Err(e) if require_all => return Err(e.into()),
            Err(e) => {
                warn!(node = %r.name, error = %e, "replica not prepared now; the batcher retries")
            }
        }
    }
    Ok(shapes.len())
}
