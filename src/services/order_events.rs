//! `imprint.v2.OrderEventService` → `/v2/order_events`.

use crate::pb::imprint::v2::{order_event_service_server::OrderEventService, *};

super::rpcs! {
    service OrderEventService(OrderEventService) {
        ListOrderEvents(list_order_events): ListOrderEventsRequest => ListOrderEventsResponse, json_body,
            GET "/v2/order_events",
            query ["order_event_id", "order_id", "partner_event_id", "network_transaction_id", "limit", "starting_after"],
            required [], body_only [];
        CreateOrderEvent(create_order_event): CreateOrderEventRequest => OrderEvent, json_body,
            POST "/v2/order_events",
            query [], required ["order_id", "type", "amount", "network_transaction_id"], body_only [];
        DeleteOrderEvent(delete_order_event): DeleteOrderEventRequest => (), no_body,
            DELETE "/v2/order_events/{order_event_id}",
            query [], required ["order_event_id"], body_only [];
    }
}
