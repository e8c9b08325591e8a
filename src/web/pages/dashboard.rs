//! The home page.

use askama::Template;
use askama_web::WebTemplate;

use crate::error::PageError;
use crate::web::extract::SessionUser;
use crate::web::views::Chrome;

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    chrome: Chrome,
}

pub async fn dashboard(session: SessionUser) -> Result<DashboardPage, PageError> {
    Ok(DashboardPage {
        chrome: Chrome::new(&session, "notebooks"),
    })
}
