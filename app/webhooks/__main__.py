from app.webhooks.dispatcher import main

main()
