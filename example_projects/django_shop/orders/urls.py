from django.urls import path

from . import views

app_name = "orders"

urlpatterns = [
    path("", views.index, name="index"),
    path("orders/<int:pk>/", views.order_detail, name="detail"),
    path("orders/<int:pk>/status.json", views.order_status, name="status"),
]
