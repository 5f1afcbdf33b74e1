//! `imprint.v2.CustomerLinkService` → `/v2/customers/{customer_id}/link`.

use crate::pb::imprint::v2::{customer_link_service_server::CustomerLinkService, *};

super::rpcs! {
    service CustomerLinkService(CustomerLinkService) {
        LinkCustomer(link_customer): LinkCustomerRequest => CustomerLink, json_body,
            POST "/v2/customers/{customer_id}/link",
            query [], required ["customer_id", "partner_customer_id"], body_only [];
    }
}
