def test_login_and_till(cashier_client):
    response = cashier_client.get("/till/")
    assert response.status_code == 200
    assert "lookup" in response.get_data(as_text=True)
