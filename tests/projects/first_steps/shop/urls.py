from django.urls import path

from . import views

urlpatterns = [
    path("add/", views.add_numbers),
    path("rate/", views.rate),
    path("pipeline/", views.pipeline),
    path("orders/", views.place_order),
    path("orders/<int:pk>/", views.order_status),
]
