import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_login__valid_credentials__lands_on_experiment_list(make_user, login, live_server):
    # Given a user
    make_user("ops-e2e", groups=("ops",))
    # When they log in through the real form in a real browser
    page = login("ops-e2e")
    # Then they see the experiment list, and their name in the top bar
    assert page.locator("h1").inner_text() == "Experiments"
    assert "ops-e2e" in page.locator(".who").inner_text()


def test_home__anonymous__redirected_to_login(page, live_server):
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
