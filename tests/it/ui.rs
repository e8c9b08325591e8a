//! The web UI end to end, in headless Chromium, as a lab member and an admin use it: log in
//! through the form, create a notebook and watch it come up without reloading, stop it,
//! delete it; add a member as the admin; create and revoke an access token. The tests
//! write the screenshots in docs/screenshots/ (1280x900).

use crate::chromium;
use crate::common;

use std::time::{Duration, Instant};

use chromium::{Browser, SHORT};
use common::*;

/// How long a fresh notebook may take to reach `running` (Jupyter starting in Docker).
const READY: Duration = Duration::from_secs(90);

/// Waits until the element `css` reads exactly `text` (trimmed).
async fn wait_exact(b: &Browser, css: &str, text: &str, timeout: Duration) {
    b.wait(&format!("`{css}` to read {text:?}"), timeout, || async {
        let el = b.visible(css).await?;
        let t = el.text().await.ok()?;
        (t.trim() == text).then_some(())
    })
    .await
}

/// The current text of `css`, or "" when it is not shown.
async fn text_of(b: &Browser, css: &str) -> String {
    match b.visible(css).await {
        Some(el) => el.text().await.unwrap_or_default().trim().to_string(),
        None => String::new(),
    }
}

async fn attr_of(b: &Browser, css: &str, attr: &str) -> Option<String> {
    b.visible(css).await?.attr(attr).await.ok().flatten()
}

/// The links of the top bar's navigation, by their text.
async fn nav_links(b: &Browser) -> Vec<String> {
    let mut out = Vec::new();
    for a in b
        .client
        .find_all(fantoccini::Locator::Css(".topbar .nav a"))
        .await
        .unwrap_or_default()
    {
        if a.is_displayed().await.unwrap_or(false) {
            out.push(a.text().await.unwrap_or_default().trim().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_creates_watches_stops_and_deletes_a_notebook() {
    if !chromium::available() {
        return;
    }
    let Some(image) = test_image() else {
        return;
    };
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ada", "ada-password-1", false);
    let b = Browser::start(&server.url).await;

    // Not logged in: the dashboard sends the browser to the login form.
    b.goto("/").await;
    b.wait_path("/login", SHORT).await;
    b.wait_text("h1", "Log in", SHORT).await;
    b.screenshot("login.png").await;

    // A wrong password says so and keeps the username.
    b.fill("input[name=username]", "ada").await;
    b.fill("input[name=password]", "not-her-password").await;
    b.click("Log in").await;
    b.wait_css(".alert.error", SHORT).await;
    assert_eq!(
        attr_of(&b, "input[name=username]", "value")
            .await
            .as_deref(),
        Some("ada")
    );

    b.login("ada", "ada-password-1").await;
    b.wait_path("/", SHORT).await;
    b.wait_text("h1", "Hello, ada", SHORT).await;
    b.wait_text(".empty", "No notebooks yet", SHORT).await;
    assert!(
        !nav_links(&b).await.iter().any(|l| l == "Admin"),
        "a member has no Admin link"
    );
    b.screenshot("dashboard-empty.png").await;

    // The create form: a name; the catalog's only image and machine are picked already.
    b.click("Create your first notebook").await;
    b.wait_path("/notebooks/new", SHORT).await;
    b.wait_text("h1", "New notebook", SHORT).await;
    let image_picked = b
        .wait_css("input[name=image][value=test]", SHORT)
        .await
        .is_selected()
        .await
        .expect("image radio");
    let machine_picked = b
        .wait_css("input[name=machine][value=cpu]", SHORT)
        .await
        .is_selected()
        .await
        .expect("machine radio");
    assert!(
        image_picked && machine_picked,
        "default image and machine are picked"
    );
    let page = b.page_text().await;
    assert!(page.contains("Test Jupyter"), "{page}");
    assert!(page.contains("CPU · 1 core · 1 GB"), "{page}");
    b.fill("input[name=name]", "thesis experiments").await;
    b.screenshot("new-notebook.png").await;

    let created = Instant::now();
    b.click("Create and start").await;
    let path = b
        .wait("the notebook's page", SHORT, || async {
            let p = b.path().await;
            (p.starts_with("/notebooks/") && p != "/notebooks/new" && !p.contains("?")).then_some(p)
        })
        .await;
    let id = path.trim_start_matches("/notebooks/").to_string();
    b.wait_text("h1", "thesis experiments", SHORT).await;
    let first_state = text_of(&b, "[data-field=state]").await;
    eprintln!("the notebook page first shows {first_state:?}");

    // The page follows the state by itself (it polls the API and reloads on a change).
    wait_exact(&b, "[data-field=state]", "running", READY).await;
    eprintln!(
        "the page shows running after {:.1}s",
        created.elapsed().as_secs_f64()
    );
    assert_eq!(b.path().await, path, "still on the notebook's page");
    let open = b.control("Open JupyterLab").await;
    assert_eq!(
        open.attr("href").await.expect("href").as_deref(),
        Some(format!("/notebooks/{id}/open").as_str())
    );
    assert_eq!(
        open.attr("target").await.expect("target").as_deref(),
        Some("_blank")
    );
    assert!(
        b.has_control("Stop").await,
        "a running notebook can be stopped"
    );
    assert!(!b.has_control("Start").await, "and not started again");

    // Jupyter's own log lines show up in the log panel within seconds.
    let logs = b.wait_text("#logs", "Jupyter", SHORT).await;
    assert!(
        logs.contains("/nb/") || logs.contains("http"),
        "the log is Jupyter's: {logs}"
    );
    b.scroll_into_view("#logs").await;
    b.screenshot("notebook-running.png").await;

    // The dashboard lists it as running, with an Open button.
    b.click("Notebooks").await;
    b.wait_path("/", SHORT).await;
    let row = format!("tr[data-notebook='{id}']");
    wait_exact(&b, &format!("{row} [data-field=state]"), "running", SHORT).await;
    let row_text = text_of(&b, &row).await;
    assert!(
        row_text.contains("thesis experiments")
            && row_text.contains("Test Jupyter")
            && row_text.contains("CPU · 1 core · 1 GB")
            && row_text.contains("Open"),
        "dashboard row: {row_text}"
    );
    assert!(b.page_text().await.contains("1 in all"));
    b.screenshot("dashboard.png").await;

    // Stop it from its page; the page follows it to stopped.
    b.click("thesis experiments").await;
    b.wait_path(&path, SHORT).await;
    b.click("Stop").await;
    wait_exact(&b, "[data-field=state]", "stopped", READY).await;
    assert!(
        b.has_control("Start").await,
        "a stopped notebook can be started"
    );
    assert!(!b.has_control("Open JupyterLab").await);
    assert!(
        containers_of_notebook(&id).is_empty(),
        "no container is left once it shows stopped"
    );

    // Delete asks first, then the dashboard is empty again.
    b.click("Delete").await;
    b.wait_path(&format!("{path}/delete"), SHORT).await;
    b.wait_text("h1", "Delete “thesis experiments”?", SHORT)
        .await;
    b.click("Delete notebook and its files").await;
    b.wait_path("/", SHORT).await;
    b.wait_text(".empty", "No notebooks yet", SHORT).await;
    assert!(!b.page_text().await.contains("thesis experiments"));

    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_adds_a_member_who_sees_no_admin_pages() {
    if !chromium::available() {
        return;
    }
    let server = TestServer::start().await;
    add_user(&server, "ada", "ada-password-1", false);
    let b = Browser::start(&server.url).await;

    b.login("admin", &server.admin_password()).await;
    b.wait_text("h1", "Hello, admin", SHORT).await;
    assert!(nav_links(&b).await.iter().any(|l| l == "Admin"));
    b.click("Admin").await;
    b.wait_path("/admin/users", SHORT).await;
    b.wait_text("h1", "Users", SHORT).await;

    let form = "form[action='/admin/users']";
    b.fill(&format!("{form} input[name=username]"), "grace")
        .await;
    b.fill(&format!("{form} input[name=password]"), "grace-password-1")
        .await;
    b.click("Add user").await;
    b.wait_text(".alert.ok", "Added grace", SHORT).await;
    let rows = text_of(&b, "table.list tbody").await;
    let grace = rows
        .lines()
        .find(|l| l.contains("grace"))
        .unwrap_or_else(|| panic!("grace is listed:\n{rows}"));
    assert!(
        grace.contains("member") && grace.contains("active"),
        "grace's row: {grace}"
    );
    for name in ["admin", "ada", "grace"] {
        assert!(rows.contains(name), "{name} is listed:\n{rows}");
    }
    b.screenshot("admin-users.png").await;

    // The new member logs in with the password the admin gave them.
    b.logout().await;
    b.login("grace", "grace-password-1").await;
    b.wait_text("h1", "Hello, grace", SHORT).await;
    let links = nav_links(&b).await;
    assert!(links.iter().any(|l| l == "Notebooks"), "{links:?}");
    assert!(
        !links.iter().any(|l| l == "Admin"),
        "a member sees no Admin link: {links:?}"
    );
    // Typing the address does not help either.
    b.goto("/admin/users").await;
    b.wait_text("h1", "404", SHORT).await;
    assert!(!b.page_text().await.contains("Add a member"));

    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_creates_and_revokes_an_access_token() {
    if !chromium::available() {
        return;
    }
    let server = TestServer::start().await;
    add_user(&server, "lin", "lin-password-1", false);
    let b = Browser::start(&server.url).await;
    b.login("lin", "lin-password-1").await;

    b.click("Settings").await;
    b.wait_path("/settings", SHORT).await;
    b.click("Access tokens").await;
    b.wait_path("/settings/tokens", SHORT).await;
    b.wait_text(".empty-inline", "You have no tokens", SHORT)
        .await;

    b.fill("input[name=name]", "laptop VS Code").await;
    b.click("Create token").await;
    let token = b.wait_css("#new-token", SHORT).await;
    let token = token.text().await.expect("token text").trim().to_string();
    assert!(token.len() >= 32, "a real token is shown: {token:?}");
    b.wait_text(".card.highlight", "shown only once", SHORT)
        .await;
    b.wait_text("table.list", "laptop VS Code", SHORT).await;
    assert!(b.has_control("Copy").await);
    b.screenshot("tokens.png").await;

    // It works for the API.
    let api = Api::new(&server.url, &token);
    let (status, me) = api.get("/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "lin");

    // Shown once: coming back to the page lists it by name and prefix only.
    b.click("Access tokens").await;
    b.wait_path("/settings/tokens", SHORT).await;
    b.wait_text("table.list", "laptop VS Code", SHORT).await;
    assert!(b.visible("#new-token").await.is_none());
    let page = b.page_text().await;
    assert!(!page.contains(&token), "the secret is not shown again");
    let prefix = text_of(&b, "table.list tbody code").await;
    let prefix = prefix.trim_end_matches('…');
    assert!(
        !prefix.is_empty() && token.starts_with(prefix),
        "prefix {prefix:?} of {token:?}"
    );

    // Revoking asks first, then the token stops working.
    b.click("Revoke").await;
    let question = b.accept_confirm().await;
    assert!(question.contains("laptop VS Code"), "{question}");
    b.wait_text(".alert.ok", "revoked", SHORT).await;
    b.wait_text(".empty-inline", "You have no tokens", SHORT)
        .await;
    assert_eq!(api.get("/api/v1/me").await.0, 401);

    b.close().await;
}
