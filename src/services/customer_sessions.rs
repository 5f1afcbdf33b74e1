//! `imprint.v2.CustomerSessionService` → `/v2/customer_sessions`.

use crate::pb::imprint::v2::{customer_session_service_server::CustomerSessionService, *};

super::rpcs! {
    service CustomerSessionService(CustomerSessionService) {
        CreateCustomerSession(create_customer_session): CreateCustomerSessionRequest => CustomerSession, json_body,
            POST "/v2/customer_sessions",
            query [], required [], body_only [], secrets ["client_secret"];
        GetCustomerSession(get_customer_session): GetCustomerSessionRequest => CustomerSession, json_body,
            GET "/v2/customer_sessions/{session_id}",
            query [], required ["session_id"], body_only [], secrets ["client_secret"];
    }
}
