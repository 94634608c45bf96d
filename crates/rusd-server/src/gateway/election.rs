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
    let api = unary!(api, election, "/election/campaign" => do_campaign with credentials);
    let api = unary!(api, election, "/election/proclaim" => do_proclaim with credentials);
    let api = unary!(api, election, "/election/leader" => do_leader with credentials);
    let api = unary!(api, election, "/election/resign" => do_resign with credentials);
    let limit = api.limit();
    api.route("/election/observe", move |request: Request| {
        let election = election.clone();
        async move {
            let cred = crate::auth::Credentials::from_http(request.headers());
            let req = match json::request::<epb::LeaderRequest>(request.into_body(), limit).await {
                Ok(req) => req,
                Err(e) => return e.into_response(),
            };
            match election.do_observe(req, &cred).await {
                Ok(responses) => respond(responses, None).await,
                // A server stream's first receive fails: the stream error form.
                Err(e) => GatewayError::from(e).into_stream_response(),
            }
        }
    })
}
