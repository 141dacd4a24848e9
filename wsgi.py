from wallet_proxy import create_app

app = create_app()
