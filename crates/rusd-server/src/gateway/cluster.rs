//! `/v3/cluster/member/{add,remove,update,list,promote}`: the Cluster service.

use std::sync::Arc;

use super::Api;
use crate::context::Ctx;
use crate::grpc::cluster::ClusterService;

/// Adds the Cluster routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let cluster = ClusterService::new(ctx.clone());
    let api = unary!(api, cluster, "/cluster/member/add" => do_member_add with credentials);
    let api = unary!(api, cluster, "/cluster/member/remove" => do_member_remove with credentials);
    let api = unary!(api, cluster, "/cluster/member/update" => do_member_update with credentials);
    let api = unary!(api, cluster, "/cluster/member/list" => do_member_list);
    unary!(api, cluster, "/cluster/member/promote" => do_member_promote with credentials)
}
