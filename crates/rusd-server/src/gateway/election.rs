//! `/v3/election/{campaign,proclaim,leader,observe,resign}`: the Election service. Observe
//! takes one request and streams `{"result": ...}` lines.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use rusd_proto::v3electionpb as epb;

use super::stream::respond;
use super::{json, Api, GatewayError};
use crate::context::Ctx;
use crate::grpc::election::ElectionService;

/// Adds the Election routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let election = ElectionService::new(ctx.clone());
    let api = unary!(api, election, "/election/campaign" => do_campaign);
    let api = unary!(api, election, "/election/proclaim" => do_proclaim);
    let api = unary!(api, election, "/election/leader" => do_leader);
    let api = unary!(api, election, "/election/resign" => do_resign);
    let limit = api.limit();
    api.route("/election/observe", move |request: Request| {
        let election = election.clone();
        async move {
            let req = match json::request::<epb::LeaderRequest>(request.into_body(), limit).await {
                Ok(req) => req,
                Err(e) => return e.into_response(),
            };
            match election.do_observe(req).await {
                Ok(responses) => respond(responses, None).await,
                // A server stream's first receive fails: the stream error form.
                Err(e) => GatewayError::from(e).into_stream_response(),
            }
        }
    })
}
