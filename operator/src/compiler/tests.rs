use super::*;
use crate::objects::{parse_documents, ObjectSet};
use crate::translator::{translate, TranslateInput};
use std::path::Path;
use std::time::Duration;

/// Two tenants (acme, globex), each with a Gateway, a route and a Service; acme also uses a
/// Service in `shared` (granted) and receives a route from `partner`. `edits` replace parts.
struct World {
    acme_path: &'static str,
    acme_generation: i64,
    globex_hostnames: &'static str,
    globex_slice_ip: &'static str,
    shared_slice_ip: &'static str,
    grant: bool,
    partner_path: &'static str,
    unrelated_port: u16,
    with_globex: bool,
}

impl Default for World {
    fn default() -> Self {
        Self {
            acme_path: "/a",
            acme_generation: 1,
            globex_hostnames: "[\"globex.test\"]",
            globex_slice_ip: "10.2.0.1",
            shared_slice_ip: "10.3.0.1",
            grant: true,
            partner_path: "/partner",
            unrelated_port: 80,
            with_globex: true,
        }
    }
}

impl World {
    fn yaml(&self) -> String {
        let mut docs = vec![format!(
            r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: acme}}
spec: {{namespace: acme, hostnames: ["*.acme.test"]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: acme}}
spec:
  gatewayClassName: bulkhead
  listeners:
  - {{name: http, protocol: HTTP, port: 80, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: acme, generation: {gen}}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: "{path}"}}}}]
    backendRefs: [{{name: app, port: 80}}, {{name: api, namespace: shared, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: acme}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shared}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-1, namespace: shared, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: [{{addresses: ["{shared_ip}"]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: visitor, namespace: partner}}
spec:
  parentRefs: [{{name: web, namespace: acme}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: "{partner}"}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: unrelated, namespace: nobody}}
spec: {{ports: [{{port: {unrelated}}}]}}
"#,
            gen = self.acme_generation,
            path = self.acme_path,
            shared_ip = self.shared_slice_ip,
            partner = self.partner_path,
            unrelated = self.unrelated_port,
        )];
        if self.grant {
            docs.push(
                r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: acme, namespace: shared}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: acme}]
  to: [{group: "", kind: Service}]
"#
                .to_owned(),
            );
        }
        if self.with_globex {
            docs.push(format!(
                r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: globex}}
spec: {{namespace: globex, hostnames: {hosts}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: globex}}
spec:
  gatewayClassName: bulkhead
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: globex}}
spec:
  parentRefs: [{{name: web}}]
  rules: [{{backendRefs: [{{name: site, port: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: site, namespace: globex}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: site-1, namespace: globex, labels: {{kubernetes.io/service-name: site}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: [{{addresses: ["{ip}"]}}]
"#,
                hosts = self.globex_hostnames,
                ip = self.globex_slice_ip,
            ));
        }
        docs.join("\n---\n")
    }

    fn objects(&self) -> ObjectSet {
        let (objects, errors) = parse_documents(Path::new("test.yaml"), &self.yaml());
        assert!(errors.is_empty(), "{errors:?}");
        ObjectSet::from_objects(objects)
    }
}

fn endpoints(port: u16) -> BTreeMap<String, RouterEndpoints> {
    ["acme", "globex"]
        .into_iter()
        .map(|t| {
            (
                t.to_owned(),
                RouterEndpoints {
                    https: vec![],
                    http: vec![format!("127.0.0.1:{port}").parse().unwrap()],
                },
            )
        })
        .collect()
}

fn versions(out: &CompileOutput) -> Vec<(String, u64)> {
    out.changed
        .iter()
        .map(|s| (s.tenant.clone(), s.version))
        .collect()
}

fn compiled(w: &World) -> (Compiler, CompileOutput) {
    let mut c = Compiler::new();
    let out = c.compile(&w.objects(), &endpoints(1));
    (c, out)
}

#[test]
fn first_compile_translates_and_publishes_everything_at_version_1() {
    let (_, out) = compiled(&World::default());
    assert_eq!(out.recomputed, vec!["acme", "globex"]);
    assert_eq!(
        versions(&out),
        vec![("acme".into(), 1), ("globex".into(), 1)]
    );
    assert_eq!(out.edge.as_ref().map(|e| e.version), Some(1));
    assert!(out.removed.is_empty());
}

#[test]
fn unchanged_input_recomputes_nothing_and_publishes_nothing() {
    let w = World::default();
    let (mut c, first) = compiled(&w);
    let out = c.compile(&w.objects(), &endpoints(1));
    assert!(out.recomputed.is_empty());
    assert!(out.changed.is_empty());
    assert!(out.edge.is_none());
    assert_eq!(out.statuses, first.statuses);
}

#[test]
fn a_route_edit_recomputes_and_bumps_only_its_tenant() {
    let (mut c, _) = compiled(&World::default());
    let out = c.compile(
        &World {
            acme_path: "/b",
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(out.recomputed, vec!["acme"]);
    assert_eq!(versions(&out), vec![("acme".into(), 2)]);
    assert!(
        out.edge.is_none(),
        "a route edit never changes the edge snapshot"
    );
    assert_eq!(c.tenant("globex").map(|s| s.version), Some(1));
    assert_eq!(c.tenant("acme").map(|s| s.version), Some(2));
}

#[test]
fn a_status_only_change_recomputes_without_a_new_version() {
    let (mut c, _) = compiled(&World::default());
    let out = c.compile(
        &World {
            acme_generation: 2,
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(out.recomputed, vec!["acme"]);
    assert!(
        out.changed.is_empty(),
        "same snapshot content, same version"
    );
    let route = out
        .statuses
        .iter()
        .find(|s| s.kind == "HTTPRoute" && s.metadata.name == "app")
        .expect("route status");
    assert_eq!(
        route.status["parents"][0]["conditions"][0]["observedGeneration"],
        2
    );
}

#[test]
fn endpoint_changes_recompute_the_tenant_that_uses_them() {
    let (mut c, _) = compiled(&World::default());
    let out = c.compile(
        &World {
            globex_slice_ip: "10.2.0.9",
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(out.recomputed, vec!["globex"]);
    assert_eq!(versions(&out), vec![("globex".into(), 2)]);

    let out = c.compile(
        &World {
            globex_slice_ip: "10.2.0.9",
            shared_slice_ip: "10.3.0.9",
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(
        out.recomputed,
        vec!["acme"],
        "a referenced Service in another namespace"
    );
    let acme = &out.changed[0];
    assert_eq!(
        acme.backends["shared/api:80"].endpoints,
        vec!["10.3.0.9:8080".parse().unwrap()]
    );
}

#[test]
fn reference_grants_and_foreign_routes_count_as_inputs() {
    let (mut c, _) = compiled(&World::default());
    let out = c.compile(
        &World {
            grant: false,
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(out.recomputed, vec!["acme"]);
    let acme = &out.changed[0];
    assert!(
        !acme.backends.contains_key("shared/api:80"),
        "grant withdrawn"
    );

    let out = c.compile(
        &World {
            grant: false,
            partner_path: "/elsewhere",
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(
        out.recomputed,
        vec!["acme"],
        "a route from another namespace"
    );
}

#[test]
fn unrelated_objects_and_router_endpoints_recompute_no_tenant() {
    let (mut c, _) = compiled(&World::default());
    let out = c.compile(
        &World {
            unrelated_port: 81,
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert!(out.recomputed.is_empty());
    assert!(out.edge.is_none());

    let out = c.compile(&World::default().objects(), &endpoints(2));
    assert!(out.recomputed.is_empty());
    assert_eq!(out.edge.as_ref().map(|e| e.version), Some(2));
    assert_eq!(c.edge().map(|e| e.version), Some(2));
}

#[test]
fn hostname_changes_recompute_the_tenant_and_the_edge() {
    let (mut c, _) = compiled(&World::default());
    let out = c.compile(
        &World {
            globex_hostnames: "[\"globex.test\", \"www.globex.test\"]",
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(out.recomputed, vec!["globex"]);
    let edge = out.edge.expect("edge changes with hostnames");
    assert_eq!(edge.version, 2);
    assert!(edge.routes.iter().any(|r| r.hostname == "www.globex.test"));
}

#[test]
fn removed_tenants_are_reported_and_versions_never_go_back() {
    let (mut c, _) = compiled(&World::default());
    let _ = c.compile(
        &World {
            globex_slice_ip: "10.2.0.9",
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    let out = c.compile(
        &World {
            with_globex: false,
            ..Default::default()
        }
        .objects(),
        &endpoints(1),
    );
    assert_eq!(out.removed, vec!["globex"]);
    assert!(c.tenant("globex").is_none());
    let out = c.compile(&World::default().objects(), &endpoints(1));
    assert_eq!(out.recomputed, vec!["globex"]);
    assert_eq!(versions(&out), vec![("globex".into(), 3)]);
}

#[test]
fn incremental_output_equals_a_full_translation() {
    let mut c = Compiler::new();
    let worlds = [
        World::default(),
        World {
            acme_path: "/x",
            ..Default::default()
        },
        World {
            acme_path: "/x",
            grant: false,
            globex_slice_ip: "10.2.0.7",
            ..Default::default()
        },
    ];
    for w in &worlds {
        let objects = w.objects();
        let out = c.compile(&objects, &endpoints(1));
        let full = translate(&TranslateInput {
            objects: &objects,
            router_endpoints: &endpoints(1),
        });
        assert_eq!(out.statuses, full.statuses);
        for (name, snapshot) in &full.tenants {
            let mut published = c.tenant(name).expect("published").clone();
            published.version = 0;
            published.seal();
            assert_eq!(&published, snapshot, "{name}");
        }
    }
}

fn one(yaml: &str) -> Object {
    let (mut objects, errors) = parse_documents(Path::new("change.yaml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    objects.remove(0)
}

fn indexed(w: &World) -> (Compiler, ObjectIndex) {
    compiled_from_scratch(ObjectIndex::from_set(&w.objects()))
}

/// A compiler that has compiled every tenant of `index` (acme and globex) once, with nothing
/// deferred.
fn compiled_from_scratch(index: ObjectIndex) -> (Compiler, ObjectIndex) {
    let mut c = Compiler::new();
    let out = c.update(
        &index,
        &Changes::everything(),
        Endpoints::Given(&endpoints(1)),
        None,
    );
    assert_eq!(out.recomputed, vec!["acme", "globex"]);
    assert_eq!(out.deferred, 0);
    (c, index)
}

#[test]
fn a_change_in_a_namespace_read_by_a_tenant_recomputes_that_tenant_only() {
    let (mut c, mut index) = indexed(&World::default());
    let mut changes = Changes::default();
    index.upsert(
            one("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: api-1, namespace: shared, labels: {kubernetes.io/service-name: api}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [\"10.3.0.99\"]}]\n"),
            &mut changes,
        );
    let out = c.update(&index, &changes, Endpoints::Given(&endpoints(1)), None);
    assert_eq!(
        out.recomputed,
        vec!["acme"],
        "acme reads shared; globex does not"
    );
    let acme = &out.changed[0];
    let api = &acme.backends["shared/api:80"];
    assert_eq!(api.endpoints, vec!["10.3.0.99:8080".parse().unwrap()]);
    assert!(out.edge.is_none());
    assert!(
        out.partitions.keys().all(|p| p == "acme"),
        "{:?}",
        out.partitions.keys()
    );
}

#[test]
fn a_route_change_recomputes_its_tenant_and_reports_its_partition() {
    let (mut c, mut index) = indexed(&World::default());
    let mut changes = Changes::default();
    index.upsert(
            one("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: site, namespace: globex}\nspec:\n  parentRefs: [{name: web}]\n  rules: [{backendRefs: [{name: missing, port: 80}]}]\n"),
            &mut changes,
        );
    let out = c.update(&index, &changes, Endpoints::Given(&endpoints(1)), None);
    assert_eq!(out.recomputed, vec!["globex"]);
    let globex = out.partitions["globex"].as_ref().expect("partition");
    let route = globex
        .iter()
        .find(|s| s.kind == "HTTPRoute" && s.metadata.name == "site")
        .expect("route status");
    let text = route.status.to_string();
    assert!(text.contains("BackendNotFound"), "{text}");
    // The full list still equals a full translation.
    let full = translate(&TranslateInput {
        objects: &index.to_set(),
        router_endpoints: &endpoints(1),
    });
    assert_eq!(c.statuses(), full.statuses);
}

#[test]
fn the_queue_is_fair_and_a_round_stops_at_its_budget() {
    let (mut c, mut index) = indexed(&World::default());
    let mut changes = Changes::default();
    let route = |ns: &str, name: &str, path: &str| {
        one(&format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: web}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}]}}]\n"))
    };
    index.upsert(route("globex", "site", "/g1"), &mut changes);
    let _ = c.update(
        &index,
        &changes,
        Endpoints::Given(&endpoints(1)),
        Some(Duration::ZERO),
    );
    let mut changes = Changes::default();
    index.upsert(route("acme", "app", "/a1"), &mut changes);
    let out = c.update(
        &index,
        &changes,
        Endpoints::Given(&endpoints(1)),
        Some(Duration::ZERO),
    );
    assert!(out.recomputed.is_empty());
    assert_eq!(out.deferred, 2);
    assert!(c.is_queued("acme") && c.is_queued("globex"));

    // globex changes again: it keeps its place (one entry per tenant), ahead of acme.
    let mut changes = Changes::default();
    index.upsert(route("globex", "site", "/g2"), &mut changes);
    let _ = c.update(
        &index,
        &changes,
        Endpoints::Given(&endpoints(1)),
        Some(Duration::ZERO),
    );
    assert_eq!(c.queued(), 2);
    let order: Vec<&String> = {
        let mut q: Vec<(&u64, &String)> = c.queue.iter().map(|(t, p)| (p, t)).collect();
        q.sort();
        q.into_iter().map(|(_, t)| t).collect()
    };
    assert_eq!(order, ["globex", "acme"]);

    let out = c.update(
        &index,
        &Changes::default(),
        Endpoints::Given(&endpoints(1)),
        None,
    );
    assert_eq!(out.recomputed, vec!["acme", "globex"]);
    assert_eq!(out.deferred, 0);
    let globex = c.tenant("globex").expect("served");
    let text = serde_json::to_string(globex).expect("json");
    assert!(text.contains("/g2") && !text.contains("/g1"), "{text}");
}

/// acme and globex each with a ListenerSet on the platform's Gateway `infra/shared`, which admits
/// `from` (and a route on it).
fn listener_set_world(from: &str) -> String {
    let tenant = |t: &str| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec: {{namespace: {t}, hostnames: [\"*.{t}.test\"]}}\n---\n{}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: www, namespace: {t}}}\nspec:\n  parentRefs: [{{kind: ListenerSet, name: www}}]\n",
            listener_set(t, "www", "1"),
        )
    };
    format!(
        "{}\n---\n{}\n---\n{}",
        tenant("acme"),
        tenant("globex"),
        shared_gateway(from)
    )
}

fn shared_gateway(from: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: shared, namespace: infra, resourceVersion: \"{from}\"}}\nspec:\n  gatewayClassName: bulkhead\n  allowedListeners: {{namespaces: {{from: {from}}}}}\n  listeners: []\n")
}

fn listener_set(ns: &str, host: &str, rv: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {{name: www, namespace: {ns}, resourceVersion: \"{rv}\"}}\nspec:\n  parentRef: {{name: shared, namespace: infra}}\n  listeners:\n  - {{name: http, protocol: HTTP, port: 80, hostname: {host}.{ns}.test}}\n")
}

fn listener_set_compiler(from: &str) -> (Compiler, ObjectIndex) {
    let (objects, errors) = parse_documents(Path::new("w.yaml"), &listener_set_world(from));
    assert!(errors.is_empty(), "{errors:?}");
    compiled_from_scratch(ObjectIndex::from_objects(objects))
}

fn http_hosts(snapshot: &TenantSnapshot) -> Vec<&str> {
    snapshot
        .http
        .virtual_hosts
        .iter()
        .map(|v| v.hostname.as_str())
        .collect()
}

#[test]
fn a_listener_set_change_recomputes_only_its_tenant() {
    let (mut c, mut index) = listener_set_compiler("All");
    assert_eq!(http_hosts(c.tenant("acme").unwrap()), ["www.acme.test"]);
    let globex_version = c.tenant("globex").unwrap().version;
    let mut changes = Changes::default();
    index.upsert(one(&listener_set("acme", "shop", "2")), &mut changes);
    let out = c.update(&index, &changes, Endpoints::Given(&endpoints(1)), None);
    assert_eq!(
        out.recomputed,
        vec!["acme"],
        "globex's ListenerSet is untouched"
    );
    assert_eq!(versions(&out), vec![("acme".to_owned(), 2)]);
    assert_eq!(http_hosts(c.tenant("acme").unwrap()), ["shop.acme.test"]);
    assert_eq!(c.tenant("globex").unwrap().version, globex_version);
    assert!(out.edge.is_none(), "hostnames come from grants");
}

#[test]
fn closing_a_shared_gateway_recomputes_every_tenant_with_a_listener_set_on_it() {
    let (mut c, mut index) = listener_set_compiler("All");
    let mut changes = Changes::default();
    index.upsert(one(&shared_gateway("None")), &mut changes);
    let out = c.update(&index, &changes, Endpoints::Given(&endpoints(1)), None);
    assert_eq!(out.recomputed, vec!["acme", "globex"]);
    for t in ["acme", "globex"] {
        assert!(
            http_hosts(c.tenant(t).unwrap()).is_empty(),
            "{t} still served"
        );
    }
    let cluster = c.statuses();
    let gateway = cluster
        .iter()
        .find(|s| s.kind == "Gateway" && s.metadata.name == "shared")
        .expect("shared Gateway status");
    assert_eq!(
        gateway.status["conditions"][0]["reason"],
        "NamespaceNotOnboarded"
    );
}
