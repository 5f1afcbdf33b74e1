//! `imprint.v2.OfferService` → `/v2/offers`.

use crate::pb::imprint::v2::{offer_service_server::OfferService, *};

super::rpcs! {
    service OfferService(OfferService) {
        GetOffer(get_offer): GetOfferRequest => Offer, json_body,
            GET "/v2/offers",
            query ["partner_customer_id"], required ["partner_customer_id"], body_only [];
    }
}
