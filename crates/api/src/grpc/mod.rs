//! The gRPC front end (`proto/nodeagent/v1/agent.proto`): the same operations as the HTTP API,
//! parsed by the same code, served on the same port.

pub mod convert;

use crate::auth::audit::AuditNote;
use crate::events::feed;
use crate::proto;
use crate::proto::agent_server::{Agent, AgentServer};
use crate::request;
use crate::Api;
use convert::{json_bytes, status_of};
use futures::{Stream, StreamExt};
use nodeagent_types::ApiError;
use serde_json::json;
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The tonic service over the shared API state.
pub(crate) struct Service {
    api: Api,
}

/// The service wrapped for tonic's router, with the same request size limit as the HTTP API.
pub(crate) fn server(api: Api) -> AgentServer<Service> {
    let max = api.max_body;
    AgentServer::new(Service { api }).max_decoding_message_size(max)
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn key_of(key: &str) -> Result<&str, Status> {
    request::validate_key(key).map_err(status_of)?;
    Ok(key)
}

fn err(e: ApiError) -> Status {
    status_of(e)
}

#[tonic::async_trait]
impl Agent for Service {
    async fn create(
        &self,
        req: Request<proto::CreateRequest>,
    ) -> GrpcResult<proto::CreateResponse> {
        let note = AuditNote::from_extensions(req.extensions());
        let req = req.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| err(ApiError::invalid("spec", "give the object spec")))?;
        note.key(&spec.name);
        let spec = request::parse_spec(
            &json_bytes(&convert::spec_json(&spec).map_err(err)?).map_err(err)?,
        )
        .map_err(err)?;
        let created = self.api.core.create(spec, req.wait).await.map_err(err)?;
        note.object(&created.object);
        Ok(Response::new(proto::CreateResponse {
            id: created.id.clone(),
            event_id: created.event_id,
            status: if req.wait { "created" } else { "accepted" }.to_string(),
            object: Some(convert::object_proto(&created.object).map_err(err)?),
        }))
    }

    async fn get(&self, req: Request<proto::GetRequest>) -> GrpcResult<proto::Object> {
        let req = req.into_inner();
        let o = self.api.core.get(key_of(&req.key)?).await.map_err(err)?;
        Ok(Response::new(convert::object_proto(&o).map_err(err)?))
    }

    async fn list(&self, _req: Request<proto::ListRequest>) -> GrpcResult<proto::ListResponse> {
        let objects = self.api.core.list().await.map_err(err)?;
        Ok(Response::new(proto::ListResponse {
            objects: objects
                .iter()
                .map(convert::object_proto)
                .collect::<Result<_, _>>()
                .map_err(err)?,
        }))
    }

    async fn update(&self, req: Request<proto::UpdateRequest>) -> GrpcResult<proto::Object> {
        let note = AuditNote::from_extensions(req.extensions());
        let req = req.into_inner();
        note.key(&req.key);
        let key = key_of(&req.key)?;
        let patch = req.patch.unwrap_or_default();
        let patch = request::parse_patch(
            &json_bytes(&convert::patch_json(&patch).map_err(err)?).map_err(err)?,
        )
        .map_err(err)?;
        let o = self
            .api
            .core
            .update(key, patch, req.wait)
            .await
            .map_err(err)?;
        note.object(&o);
        Ok(Response::new(convert::object_proto(&o).map_err(err)?))
    }

    async fn delete(&self, req: Request<proto::DeleteRequest>) -> GrpcResult<proto::Object> {
        let note = AuditNote::from_extensions(req.extensions());
        let req = req.into_inner();
        note.key(&req.key);
        let opts = nodeagent_core::DeleteOptions {
            wait: req.wait,
            remove: req.remove,
        };
        let o = self
            .api
            .core
            .delete_with(key_of(&req.key)?, opts)
            .await
            .map_err(err)?;
        note.object(&o);
        Ok(Response::new(convert::object_proto(&o).map_err(err)?))
    }

    async fn push_on(&self, req: Request<proto::PushOnRequest>) -> GrpcResult<proto::PushAck> {
        let note = AuditNote::from_extensions(req.extensions());
        let req = req.into_inner();
        note.key(&req.key);
        let key = key_of(&req.key)?;
        let mut body = json!({ "sink": req.sink });
        if let Some(i) = &req.interval {
            body["interval"] = json!(i);
        }
        if let Some(m) = &req.mode {
            body["mode"] = json!(m);
        }
        let b = request::parse_push_on(&json_bytes(&body).map_err(err)?).map_err(err)?;
        let ack = self
            .api
            .core
            .push_on(key, &b.sink, b.interval, b.mode)
            .await
            .map_err(err)?;
        note.id(&ack.id);
        Ok(Response::new(convert::push_ack_proto(&ack)))
    }

    async fn push_off(&self, req: Request<proto::PushOffRequest>) -> GrpcResult<proto::PushAck> {
        let note = AuditNote::from_extensions(req.extensions());
        let req = req.into_inner();
        note.key(&req.key);
        let key = key_of(&req.key)?;
        let b = request::parse_sink_body(&json_bytes(&json!({ "sink": req.sink })).map_err(err)?)
            .map_err(err)?;
        let ack = self.api.core.push_off(key, &b.sink).await.map_err(err)?;
        note.id(&ack.id);
        Ok(Response::new(convert::push_ack_proto(&ack)))
    }

    async fn push_once(&self, req: Request<proto::PushOnceRequest>) -> GrpcResult<proto::PushAck> {
        let note = AuditNote::from_extensions(req.extensions());
        let req = req.into_inner();
        note.key(&req.key);
        let key = key_of(&req.key)?;
        let b = request::parse_sink_body(&json_bytes(&json!({ "sink": req.sink })).map_err(err)?)
            .map_err(err)?;
        let ack = self.api.core.push_once(key, &b.sink).await.map_err(err)?;
        note.id(&ack.id);
        Ok(Response::new(convert::push_ack_proto(&ack)))
    }

    async fn metrics(
        &self,
        req: Request<proto::MetricsRequest>,
    ) -> GrpcResult<proto::MetricsResponse> {
        let req = req.into_inner();
        let key = key_of(&req.key)?;
        let limit = req
            .limit
            .map(request::parse_limit)
            .transpose()
            .map_err(err)?;
        let samples = self.api.core.metrics(key, limit).await.map_err(err)?;
        Ok(Response::new(proto::MetricsResponse {
            samples: samples.iter().map(convert::sample_proto).collect(),
        }))
    }

    async fn host(&self, _req: Request<proto::HostRequest>) -> GrpcResult<proto::HostInfo> {
        let h = self.api.core.host().await.map_err(err)?;
        Ok(Response::new(convert::host_proto(&h).map_err(err)?))
    }

    async fn events(
        &self,
        req: Request<proto::EventsRequest>,
    ) -> GrpcResult<proto::EventsResponse> {
        let since = req.into_inner().since;
        Ok(Response::new(proto::EventsResponse {
            events: self
                .api
                .core
                .events(since)
                .iter()
                .map(convert::event_proto)
                .collect(),
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send + 'static>>;

    async fn watch(&self, req: Request<proto::WatchRequest>) -> GrpcResult<Self::WatchStream> {
        let since = req.into_inner().since;
        let events = feed(self.api.core.clone(), since, self.api.stop.clone())
            .map(|e| Ok(convert::event_proto(&e)));
        Ok(Response::new(Box::pin(events)))
    }
}
