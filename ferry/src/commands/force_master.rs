//! `ferry force-master NODE`: make a node master when the cluster cannot
//! decide by itself (possible data loss; recorded and shown as forced).

use super::admin_http::{ask, refused};
use ferry::operations::answers::Forced;
use ferry_admin::api;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str) -> anyhow::Result<ExitCode> {
    let body = api::ForceMaster {
        node: node.to_string(),
    };
    match ask::<_, Forced>(admin, hyper::Method::POST, "/force-master", Some(&body)).await? {
        Ok(doc) => {
            println!(
                "{node}: master at epoch {} (forced: possible data loss; the other nodes are fenced out)",
                doc.epoch
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(r) => Ok(refused(&format!("force-master {node}"), &r)),
    }
}
