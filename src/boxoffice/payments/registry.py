"""The payment providers of a deployment: built once per worker, kept on the app's state."""

from dataclasses import dataclass

from boxoffice.config import Settings
from boxoffice.payments.providers import PaymentProvider
from boxoffice.payments.testpay import TestProvider


@dataclass(frozen=True)
class Providers:
    # The provider new payments go to (PAYMENT_PROVIDER); the only one whose notifications
    # are taken: with Stripe configured, nobody can book by signing `test` notifications.
    checkout: PaymentProvider
    # Every provider a payment on record may need refunding through: the `test` one always
    # (direct confirms and demo bookings), and the configured one.
    by_name: dict[str, PaymentProvider]

    def notifying(self, name: str) -> PaymentProvider | None:
        return self.checkout if name == self.checkout.name else None


def build_providers(settings: Settings) -> Providers:
    test = TestProvider(settings)
    by_name: dict[str, PaymentProvider] = {"test": test}
    if settings.payment_provider == "stripe":
        from boxoffice.payments.stripe_provider import StripeProvider

        by_name["stripe"] = StripeProvider(settings)
    return Providers(checkout=by_name[settings.payment_provider], by_name=by_name)
