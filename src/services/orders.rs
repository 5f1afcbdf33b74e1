//! `imprint.v2.OrderService` → `/v2/orders`.

use crate::pb::imprint::v2::{order_service_server::OrderService, *};

super::rpcs! {
    service OrderService(OrderService) {
        ListOrders(list_orders): ListOrdersRequest => ListOrdersResponse, json_body,
            GET "/v2/orders",
            query ["id", "partner_order_id"], required [], body_only [];
        CreateOrder(create_order): CreateOrderRequest => Order, json_body,
            POST "/v2/orders",
            query [], required ["payment_method_id", "partner_order_id", "total_order_amount"], body_only [];
        UpdateOrder(update_order): UpdateOrderRequest => Order, json_body,
            PUT "/v2/orders/{order_id}",
            query [], required ["order_id", "payment_method_id", "partner_order_id", "total_order_amount"], body_only [];
        DeleteOrder(delete_order): DeleteOrderRequest => (), no_body,
            DELETE "/v2/orders/{order_id}",
            query [], required ["order_id"], body_only [];
    }
}
