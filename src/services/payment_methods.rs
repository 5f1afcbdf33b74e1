//! `imprint.v2.PaymentMethodService` → `/v2/payment_methods`.

use crate::pb::imprint::v2::{payment_method_service_server::PaymentMethodService, *};

super::rpcs! {
    service PaymentMethodService(PaymentMethodService) {
        // A PAN forces the POST form: it never goes in a URL.
        ListPaymentMethods(list_payment_methods): ListPaymentMethodsRequest => ListPaymentMethodsResponse, json_body,
            GET "/v2/payment_methods",
            query ["customer_id", "type", "limit", "starting_after"], required ["customer_id"], body_only ["pan"];
        GetPaymentMethod(get_payment_method): GetPaymentMethodRequest => PaymentMethod, json_body,
            GET "/v2/payment_methods/{payment_method_id}",
            query [], required ["payment_method_id"], body_only [];
    }
}
