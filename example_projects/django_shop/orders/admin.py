from django.contrib import admin

from .models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "product", "quantity", "amount", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["customer", "product", "charge_id", "tracking_id"]
    readonly_fields = ["status", "charge_id", "tracking_id", "created_at"]
