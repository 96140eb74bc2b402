//! `nurture contacts import` and `nurture events send`: bad rows are listed with line and
//! reason, good rows are kept.

use std::process::Command;

fn nurture(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn project(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("workflows/w.yaml"),
        "workflow: w\ntrigger: { event: contact.created }\nsteps:\n  - id: hi\n    tag: [new]\n",
    )
    .unwrap();
}

#[test]
fn csv_import_keeps_good_rows_and_explains_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    project(d);
    std::fs::write(
        d.join("contacts.csv"),
        "id,email,first_name,timezone,consent,tags,company.name,company.employees\n\
         c1,ana@example.com,Ana,Europe/Sofia,opted_in,vip;newsletter,Acme,40\n\
         c2,not-an-email,Bo,,unknown,,,\n\
         c3,cy@example.com,Cy,Mars/Base,,,,\n\
         c4,di@example.com,Di,,opted_out,,Globex,250\n",
    )
    .unwrap();
    let out = nurture(d, &["contacts", "import", "contacts.csv"]);
    assert_eq!(out.status.code(), Some(1), "rejected rows give exit 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("contacts.csv:3: rejected: `email` \"not-an-email\" is not an email address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("contacts.csv:4: rejected: `timezone` \"Mars/Base\""),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2 created, 0 updated, 2 rejected"
    );

    // Importing again updates, and the JSON summary is for scripts.
    std::fs::write(
        d.join("more.jsonl"),
        "{\"id\": \"c1\", \"title\": \"VP Marketing\"}\n{\"email\": \"new@example.com\"}\n",
    )
    .unwrap();
    let out = nurture(d, &["contacts", "import", "more.jsonl", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["created"].as_u64(), v["updated"].as_u64()),
        (Some(1), Some(1))
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = nurture_server::open_store(&format!("sqlite://{}", d.join("nurture.db").display()))
            .await
            .unwrap();
        let c1 = s.contact("c1").await.unwrap().unwrap();
        assert_eq!(c1.fields["company"]["employees"], 40);
        assert_eq!(c1.fields["title"], "VP Marketing");
        assert!(c1.tags.contains("vip"));
        assert_eq!(c1.timezone.as_deref(), Some("Europe/Sofia"));
        // Each new contact got a contact.created event, queued for the engine.
        assert_eq!(s.pending_events(100).await.unwrap().len(), 3);
    });
}
