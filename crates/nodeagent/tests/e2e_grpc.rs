//! gRPC against the real daemon, on the same port as HTTP, with the generated client.

#![allow(clippy::unwrap_used)]

mod common;

use common::{cgroup_dir, read_trim, require_cgroup_v1, Daemon};
use nodeagent_api::proto::{
    CreateRequest, DeleteRequest, GetRequest, ObjectPatch, ObjectSpec, ProcessSpec, Resources,
    UpdateRequest,
};

fn spec(name: &str, memory: &str) -> ObjectSpec {
    ObjectSpec {
        name: name.into(),
        kind: "process".into(),
        process: Some(ProcessSpec {
            command: vec!["/bin/sleep".into(), "300".into()],
            ..Default::default()
        }),
        resources: Some(Resources {
            cpu: Some(0.5),
            memory: Some(memory.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn grpc_create_get_update_delete() {
    require_cgroup_v1();
    let d = Daemon::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // With the daemon's bearer token: gRPC shares the port and its authentication.
        let mut c = common::grpc_client(d.port).await;

        let created = c
            .create(CreateRequest {
                spec: Some(spec("grpc-1", "64Mi")),
                wait: true,
            })
            .await
            .unwrap()
            .into_inner();
        let obj = created.object.expect("create with wait returns the object");
        assert_eq!(obj.status, "running");
        assert_eq!(obj.id, created.id);
        let pid = obj.pid.expect("pid");
        let cpu = cgroup_dir(pid, "cpu");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
        let mem = cgroup_dir(pid, "memory");
        assert_eq!(read_trim(&mem.join("memory.limit_in_bytes")), "67108864");

        let got = c
            .get(GetRequest {
                key: "grpc-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.id, obj.id);

        let updated = c
            .update(UpdateRequest {
                key: obj.id.clone(),
                patch: Some(ObjectPatch {
                    resources: Some(Resources {
                        cpu: Some(0.25),
                        ..Default::default()
                    }),
                    paused: None,
                    vm: None,
                    k8s: None,
                    helm: None,
                }),
                wait: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.id, obj.id);
        assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "25000");

        // The same validation as HTTP, with the field named.
        let err = c
            .create(CreateRequest {
                spec: Some(spec("grpc-2", "64Xi")),
                wait: true,
            })
            .await
            .expect_err("bad memory");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("resources.memory"), "{err:?}");

        let err = c
            .get(GetRequest {
                key: "no-such-object".into(),
            })
            .await
            .expect_err("unknown");
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

        c.delete(DeleteRequest {
            key: obj.id.clone(),
            wait: true,
            remove: false,
        })
        .await
        .unwrap();
        assert!(common::process_gone(pid), "pid {pid} survived delete");
        assert!(!cpu.exists(), "{} survived delete", cpu.display());
    });
}
